"""What the judge measured for one job, before any threshold: per-output metrics and, for a
detector, the detection figures. The verdict is not in it, so a changed threshold judges a
stored measurement again instead of running anything.

A measurement is keyed by the simulator job's key (the model, config, inputs, calibration data,
toolkit environment and worker) plus what else decides the numbers: the spec's metric settings
(metrics_config_hash: inputs, convert, reference, the detector's decoding), the image and label
files' contents, the host packages that compute the reference and the metrics, and this
package's own code.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import List, Optional

from .detection.check import DetectionMetrics
from .fingerprint import host_versions
from .onnx_model import file_sha256
from .result import OutputMetrics, SliceMetrics, json_safe
from .spec import Spec

FORMAT = 2  # bump when the record's layout changes
PACKAGE = Path(__file__).resolve().parent


@dataclass
class Measurement:
    outputs: List[OutputMetrics]
    detection: Optional[DetectionMetrics] = None
    slices: List[SliceMetrics] = field(default_factory=list)
    hints: List[str] = field(default_factory=list)  # diagnosis/hints.py, from the arrays and the spec

    def to_record(self) -> dict:
        return {"format": FORMAT, "outputs": [m.to_dict() for m in self.outputs],
                "detection": json_safe(self.detection.to_dict()) if self.detection is not None else None,
                "slices": [part.to_dict() for part in self.slices], "hints": list(self.hints)}

    @classmethod
    def from_record(cls, record: dict, job_dir: Path) -> "Measurement":
        """The inverse of to_record, with the detection pictures' paths under job_dir; ValueError for a
        record of another format."""
        if record.get("format") != FORMAT:
            raise ValueError(f"measurement format {record.get('format')}, not {FORMAT}")
        outputs = [_restore(OutputMetrics, m) for m in record["outputs"]]
        detection = None
        if record["detection"] is not None:
            detection = _restore(DetectionMetrics, record["detection"])
            detection.counts = [tuple(c) for c in detection.counts]
            detection.overlays = [str(job_dir / name) for name in detection.overlays]
        return cls(outputs, detection, [_restore(SliceMetrics, part) for part in record["slices"]],
                   list(record["hints"]))

    def files(self, job_dir: Path) -> List[str]:
        """The files the measurement refers to, relative to job_dir (the detection pictures)."""
        if self.detection is None:
            return []
        return [str(Path(path).relative_to(job_dir)) for path in self.detection.overlays]

    def stored_record(self, job_dir: Path) -> dict:
        """to_record, with the pictures' paths relative to job_dir."""
        record = self.to_record()
        if record["detection"] is not None:
            record["detection"]["overlays"] = self.files(job_dir)
        return record


def _restore(cls, values: dict):
    """A dataclass from its to_dict(), with json_safe's 'nan'/'inf' strings turned back into floats in
    its float fields only (an output, image or sample may be named 'inf'); ValueError for another
    string in a float field."""
    kwargs = {}
    for f in fields(cls):
        if f.name in values:
            kwargs[f.name] = _floats(values[f.name]) if "float" in str(f.type) else values[f.name]
    return cls(**kwargs)


def _floats(value):
    if isinstance(value, str):  # json_safe's 'nan', 'inf', '-inf'
        return float(value)
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    return value


def key(job_key: Optional[str], spec: Spec, labels: List[str], image_paths: List[Optional[str]]) -> Optional[str]:
    """The measurement's key; None without a job key (the cache is off, or the job has no key)."""
    if job_key is None:
        return None
    check = spec.checks.yolov5
    material = {
        "format": FORMAT,
        "job": job_key,
        "metrics_config": spec.metrics_config_hash(),
        "sample_labels": list(labels),  # the names in messages
        "overlays": check.overlays if check is not None else None,
        "slices": [part.model_dump() for part in spec.checks.cosine.slices],
        "images": [file_sha256(Path(p)) if p else None for p in image_paths] if check is not None else None,
        "labels": _tree_digest(spec.resolve(check.labels)) if check is not None and check.labels else None,
        "host": host_versions(),
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _tree_digest(path: Path) -> Optional[dict]:
    """A file's sha256, or every file's under a folder; None when it does not exist."""
    if path.is_file():
        return {"": file_sha256(path)}
    if path.is_dir():
        return {str(p.relative_to(path)): file_sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return None


@functools.lru_cache(maxsize=None)
def code_digest() -> str:
    """This package's Python source: a change to how anything is measured is a new key."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
