"""After an item failed: the evidence the diagnosis package gathers for it, never its verdict.

A BUILD or CRASH that names no node is reduced to the node (diagnosis/reduce.py); a failure a toolkit
call can reproduce gets a repro bundle (diagnosis/repro.py). The runner calls `gather` with the item's
staged inputs; what fails here becomes a warning on the result, and its class and outcome stay.
(The per-layer localisation of an ACCURACY failure runs inside the simulator measurement, which
has the job at hand: see runner._measure_in_simulator.)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from .backends.board import BOARD
from .backends.simulator import SIM
from .diagnosis import repro
from .diagnosis.reduce import REDUCED_CLASSES, reduce_failure
from .errors import RknnError
from .result import RunResult
from .spec import Spec
from .toolkit import client


class FailureEvidence:
    def __init__(self, runner, reduce_budget: float):
        self.runner = runner  # the RknnRunner: its stages are cached, so asking again costs nothing
        self.reduce_budget = reduce_budget  # seconds for reducing a BUILD/CRASH to one node; 0: off

    def gather(self, result: RunResult, spec: Spec, staged, version: str, backend: str) -> None:
        """`spec`: the version's spec; `staged`: the spec's model facts and inputs."""
        if result.failure_class in REDUCED_CLASSES and self.reduce_budget > 0:
            self._reduce(result, spec, staged, version, backend)
        if repro.wanted(result):
            self._repro_bundle(result, spec, staged, version, backend)

    def _reduce(self, result: RunResult, spec: Spec, staged, version: str, backend: str) -> None:
        """Bisected to the node, within the budget; a board item's with board runs of the sub-models."""
        assert result.failure_class is not None  # a failed result (in REDUCED_CLASSES)
        try:
            written = self.runner.write_job(spec, staged, version)  # cached: the simulator job's folder
            what = f"rknn-toolkit2 {version}"
            out_dir = written.job_dir
            run_job: Callable[[Path, float], object] = (
                lambda folder, seconds: client.run_worker(written.python, folder, seconds, what))
            if backend == BOARD:
                out_dir = written.job_dir.parent / f"{version}-board"
                if not (out_dir / "job.json").is_file():  # the simulator failed: its own item reduces that
                    return
                run_job = self._on_board_candidate(spec, version, written.python, what)
            reduction = reduce_failure(
                written.job_dir, RknnError(result.failure_class, result.message, result.log_tail), run_job,
                self.reduce_budget, spec.timeout or self.runner.timeout, out_dir, verify_first=backend == BOARD)
        except Exception as exc:  # evidence: it never fails an item differently
            result.warnings.append(f"the {result.failure_class} was not reduced: {type(exc).__name__}: {exc}")
            return
        if reduction is not None:
            result.reduction = reduction.record()
            result.timings["reduce"] = reduction.seconds
            sentence = reduction.sentence(self.reduce_budget)
            if sentence:  # none when the model itself, built and run again, did not fail alike
                result.message += "; " + sentence

    def _on_board_candidate(self, spec: Spec, version: str, python: str, what: str):
        """Run a reduction candidate as a board item runs its model: built and simulated by the toolkit, announced
        like any artifact (pytest_rknn_artifact_built), then on the spec's board with its sha256 checked there."""
        session = self.runner.board.pool.session_for(f"{spec.name}/{version}")

        def run(folder: Path, seconds: float) -> None:
            try:
                built = client.run_worker(python, folder, seconds, what)
            except RknnError:  # the sub-model does not even build: not the board's failure
                return
            if built.get("status") != "ok":
                return
            job = json.loads((folder / "job.json").read_text())
            config = job.get("config", {})
            convert = spec.convert.model_copy(update={"mean_values": config.get("mean_values"),
                                                      "std_values": config.get("std_values")})
            rknn = folder / built["rknn"]
            self.runner.simulator.on_artifact(spec=dataclasses.replace(spec, model_path=Path(job["model"]),
                                                                       convert=convert),
                                              version=version, rknn_path=rknn, sha256=built["rknn_sha256"])
            board_dir = folder / "board"
            board_dir.mkdir(exist_ok=True)
            shutil.copyfile(folder / "inputs.npz", board_dir / "inputs.npz")
            (board_dir / "job.json").write_text(json.dumps({"latency_runs": 0, "samples": 1,
                                                            "data_format": job["data_format"]}))
            session.run_job(board_dir, rknn, built["rknn_sha256"], version)

        return run

    def _repro_bundle(self, result: RunResult, spec: Spec, staged, version: str, backend: str) -> None:
        started = time.monotonic()
        try:
            written = self.runner.write_job(spec, staged, version)  # cached: the simulator job's folder
            job_dir = written.job_dir if backend == SIM else written.job_dir.parent / f"{version}-board"
            if not (job_dir / "job.json").is_file():  # a board item: only once its job went to the board
                return
            try:
                reference = self.runner.reference(spec, staged).outputs  # cached, or computed for the bundle
            except Exception:  # onnxruntime failed: a bundle without reference outputs
                reference = None
            result.repro = repro.write_bundle(result, spec, staged.model, staged.inputs, job_dir, written.job_dir,
                                              reference, written.python)
            result.timings["repro"] = time.monotonic() - started
        except Exception as exc:  # the bundle is evidence: it never fails an item differently
            result.warnings.append(f"no repro bundle was written: {type(exc).__name__}: {exc}")
