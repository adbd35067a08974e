"""Three ways of turning (model, inputs) into outputs, behind one interface.

A backend takes a `Job` and returns `Executed`: the outputs per sample and where they came from.
The runner hands jobs to backends; the judge (metrics, checks, detection) only ever sees the
arrays, never which backend made them.

- `onnxruntime.OnnxRuntimeBackend`: the reference, in this process;
- `simulator.SimulatorBackend`: RKNN-Toolkit2's simulator, in a worker of the toolkit's environment,
  behind the result cache;
- `board.BoardBackend`: rknn-toolkit-lite2 on a board over SSH, running the simulator's `.rknn`.

Each has `run(job)` and `close()` (end of session).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Protocol, Sequence

import numpy as np

from ..errors import BUILD, RknnError
from ..inputs import InputSet
from ..onnx_model import ModelInfo
from ..spec import Spec

Outputs = Sequence[Optional[List[np.ndarray]]]  # [sample][output]; None where a backend returned no output


def every_sample(outputs: Optional[Outputs], who: str) -> List[List[np.ndarray]]:
    """[sample][output] of a backend that gave every sample's outputs; BUILD when `who` gave none for one."""
    if outputs is None:
        raise ValueError(f"{who}: its outputs were not loaded")
    missing = [s for s, sample in enumerate(outputs) if sample is None]
    if missing:
        raise RknnError(BUILD, f"{who}: inference() returned None for {len(missing)} of {len(outputs)} samples "
                               f"(first: sample {missing[0]})")
    return [sample for sample in outputs if sample is not None]


@dataclass
class Job:
    """One model and its inputs, for one toolkit version (the spec is that version's)."""

    spec: Spec
    model: ModelInfo
    inputs: InputSet
    version: Optional[str] = None  # onnxruntime has none
    artifact: Optional["Executed"] = None  # board jobs: the simulator's run, whose .rknn the board runs


@dataclass
class Executed:
    """What a backend produced for all samples of a job."""

    backend: str
    outputs: Optional[Outputs]  # None: not loaded (a simulator job the result cache recorded, see recorded())
    job_dir: Optional[Path] = None  # the job folder (none for onnxruntime)
    result: dict = field(default_factory=dict)  # the job's result.json: status, timings, the .rknn, ...
    log_lines: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rknn_path(self) -> Path:
        return self.job_dir / self.result["rknn"]


class Backend(Protocol):
    name: str

    def run(self, job: Job) -> Executed:
        """Outputs for every sample of the job, or an RknnError with the failure class."""

    def close(self) -> None:
        """End of session: stop what the backend started. Never raises."""
