"""Result objects: what one (spec, version, backend) run produced and measured."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional


@dataclass
class OutputMetrics:
    name: str
    ref_shape: List[int]
    samples: int
    shape: Optional[List[int]] = None
    shape_ok: bool = True
    missing: int = 0  # samples for which the backend returned no output
    nonfinite: int = 0  # NaN/Inf in the RKNN output where the reference is finite
    nonfinite_sample: Optional[int] = None
    ref_nonfinite: int = 0
    cosines: List[float] = field(default_factory=list)
    worst_cosine: float = float("nan")
    worst_sample: int = 0
    worst_label: str = ""
    max_abs: float = float("nan")
    mean_abs: float = float("nan")
    vs_sim_cosine: Optional[float] = None  # board items: worst cosine of the board against the simulator
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: _json_number(v) for k, v in asdict(self).items()}


def format_cosine(value: Optional[float], threshold: Optional[float] = None) -> str:
    """Floored, so 0.9999996 never reads 1.000000 nor 0.9899996 0.990000; six decimals, or
    one more than the threshold has, so the two can be told apart."""
    if value is None or math.isnan(value):
        return "nan"
    decimals = 6
    if threshold is not None:
        decimals = max(decimals, len(repr(float(threshold)).split(".")[1]) + 1)
    scale = 10 ** decimals
    return f"{math.floor(value * scale) / scale:.{decimals}f}"


def _json_number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_json_number(v) for v in value]
    return value


@dataclass
class RunResult:
    """One item's outcome. `failure_class` is None when it passed."""

    spec: str
    version: str
    backend: str
    outputs: List[OutputMetrics] = field(default_factory=list)
    failure_class: Optional[str] = None
    message: str = ""
    failures: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)  # worth knowing although the item passed
    log_path: Optional[Path] = None
    log_tail: Optional[str] = None
    rknn_path: Optional[Path] = None
    rknn_sha256: Optional[str] = None
    toolkit_version: Optional[str] = None
    board: Optional[dict] = None  # board items: the board's preflight fingerprint
    detection: Optional[object] = None  # with checks.yolov5: a detection.check.DetectionMetrics
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.failure_class is None

    def output(self, name: str) -> OutputMetrics:
        for metrics in self.outputs:
            if metrics.name == name:
                return metrics
        raise KeyError(f"no output '{name}'; outputs: {', '.join(m.name for m in self.outputs)}")

    def __getitem__(self, name: str) -> OutputMetrics:
        return self.output(name)
