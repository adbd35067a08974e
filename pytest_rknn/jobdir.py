"""The job-directory protocol, the same for the simulator worker and the board runner:
job.json + inputs.npz (s{sample}_i{input}) in; result.json + outputs.npz (s{sample}_o{output})
+ log.txt out.

The arrays are what make a job folder big (a YOLO job with 20 images: 170 MB). Once an item has
passed nobody needs them, so trim() removes them; the .rknn, job.json, result.json and log.txt stay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .inputs import InputSet


def input_arrays(inputs: InputSet) -> Dict[str, np.ndarray]:
    """inputs.npz's arrays, by name."""
    return {f"s{s}_i{i}": array for s, sample in enumerate(inputs.samples) for i, array in enumerate(sample)}


def write_job(job_dir: Path, job: dict, inputs: InputSet) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    # mypy takes the **dict for a possible allow_pickle=; numpy's stubs type the arrays as **kwds
    np.savez(job_dir / "inputs.npz", **input_arrays(inputs))  # type: ignore[arg-type]
    job = dict(job, samples=len(inputs), data_format=[layout or "nchw" for layout in inputs.layouts])
    (job_dir / "job.json").write_text(json.dumps(job, indent=1))


def read_outputs(job_dir: Path, samples: int, failed: List[int]) -> List[Optional[List[np.ndarray]]]:
    """[sample][output]; None for a sample whose inference() returned None."""
    with np.load(job_dir / "outputs.npz") as data:
        keys = set(data.files)
        outputs: List[Optional[List[np.ndarray]]] = []
        for s in range(samples):
            if s in failed:
                outputs.append(None)
                continue
            k, arrays = 0, []
            while f"s{s}_o{k}" in keys:
                arrays.append(data[f"s{s}_o{k}"])
                k += 1
            outputs.append(arrays)
    return outputs


LARGE_FILES = ("inputs.npz", "outputs.npz")
OVERLAYS = "overlays"  # the detection check's pictures
CALIBRATION = "calibration"  # the calibration images as preprocessed arrays (toolkit/calibration.py)


def trim(job_dir: Path, overlays: bool = True) -> int:
    """Remove a job folder's arrays, calibration arrays included (and its overlays, unless `overlays` is
    False); the bytes freed."""
    freed = 0
    for name in LARGE_FILES:
        path = job_dir / name
        if path.is_file():
            freed += path.stat().st_size
            path.unlink()
    for name, wanted in ((OVERLAYS, overlays), (CALIBRATION, True)):
        folder = job_dir / name
        if wanted and folder.is_dir():
            freed += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder)
    return freed
