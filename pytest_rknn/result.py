"""Result objects: what one (spec, version, backend) run produced and measured."""

from __future__ import annotations

import decimal
import math
import sysconfig
import traceback as tb
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .errors import ACCURACY, INTERNAL, RknnError

if TYPE_CHECKING:  # they import this module
    from .detection.check import DetectionMetrics
    from .diagnosis.profile import Profile

TRACEBACK_SECTION = "rknn traceback"
MOVED = "ran on board "  # the start of the warning of a board item that another board took over


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
        return {k: json_safe(v) for k, v in asdict(self).items()}


@dataclass
class SliceMetrics:
    """checks.cosine.slices: one part of one output against the same part of the reference."""

    name: str
    output: str
    worst_cosine: float
    worst_sample: int
    worst_label: str
    ref_range: List[float]  # the reference's lowest and highest value in this part, over the samples

    def to_dict(self) -> dict:
        return {k: json_safe(v) for k, v in asdict(self).items()}


def format_cosine(value: Optional[float], threshold: Optional[float] = None) -> str:
    """Floored, so 0.9999996 never reads 1.000000 nor 0.9899996 0.990000; six decimals, or
    one more than the threshold has, so the two can be told apart."""
    if value is None or math.isnan(value):
        return "nan"
    decimals = 6
    if threshold is not None:
        exponent = decimal.Decimal(repr(float(threshold))).as_tuple().exponent  # 0.995 -> -3, 1e-05 -> -5
        if isinstance(exponent, int):  # not for an infinite or NaN threshold ('F', 'n')
            decimals = max(decimals, -exponent + 1)
    scale = 10 ** decimals
    return f"{math.floor(value * scale) / scale:.{decimals}f}"


def json_safe(value):
    """NaN and Inf as strings (JSON has no such numbers), inside lists, tuples and dicts too."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
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
    detection: Optional[DetectionMetrics] = None  # with checks.yolov5: a detection.check.DetectionMetrics
    profile: Optional[Profile] = None  # sim items: the build's diagnosis.profile.Profile (placement, cycles, memory)
    latency: Optional[dict] = None  # board items: inference() on the board, median_ms, p90_ms, runs, core_mask
    localisation: Optional[dict] = None  # a failed sim item: the toolkit's per-layer analysis (diagnosis/localise.py)
    reduction: Optional[dict] = None  # a BUILD/CRASH item: the smallest sub-graph that fails alike (diagnosis/reduce.py)
    repro: Optional[Path] = None  # a failed item: the repro bundle's folder (diagnosis/repro.py)
    hints: List[str] = field(default_factory=list)  # what the failure probably means and the fix; never an outcome
    slices: List[SliceMetrics] = field(default_factory=list)  # checks.cosine.slices
    timings: Dict[str, float] = field(default_factory=dict)
    spec_path: Optional[Path] = None  # the spec file; None for a spec given as a dict
    fingerprint: Dict[str, Any] = field(default_factory=dict)  # see README "Fingerprint"
    comparisons: List[dict] = field(default_factory=list)  # against the baseline and --rknn-compare-to
    thresholds: Dict[str, float] = field(default_factory=dict)  # cosine.OUTPUT: the spec's minimum
    traceback: Optional[str] = None  # INTERNAL results: where the unexpected exception came from
    cache: str = "off"  # the simulator job came from the result cache (hit), was not found there and ran (miss),
    # or neither (off: the cache is off, or the job failed without a result)
    measurement_cache: str = "off"  # sim items: the judge's measurement came from the result cache (hit: no
    # worker, no onnxruntime), was measured and stored (miss), or neither (off; board items are never cached)

    def fail_with(self, exc: Exception) -> None:
        """Fail the result for this exception: an RknnError's class and message, else INTERNAL."""
        if isinstance(exc, RknnError):
            self.failure_class, self.message, self.log_tail = exc.failure_class, exc.message, exc.log_tail
        else:
            self.failure_class = INTERNAL
            self.message, self.traceback = describe_exception(exc)

    def add_failures(self, lines: List[str], failure_class: str = ACCURACY) -> None:
        """Fail the result for these reasons too (in `failure_class` if it had passed)."""
        if lines and self.failure_class is None:
            self.failure_class = failure_class
            self.message = lines[0]
        self.failures += lines

    def metrics(self) -> Dict[str, float]:
        """The comparable numbers, flat: cosine.OUTPUT, max_abs.OUTPUT, vs_sim_cosine.OUTPUT; with a
        detector map50, map (against labels) and agreement_map50 (against onnxruntime); for a sim item the
        build's profile (cpu_ops, cycles, memory.*), for a board item latency.median_ms."""
        flat = {}
        for m in self.outputs:
            if m.shape_ok and not m.missing:
                flat[f"cosine.{m.name}"] = m.worst_cosine
                flat[f"max_abs.{m.name}"] = m.max_abs
                if m.vs_sim_cosine is not None:
                    flat[f"vs_sim_cosine.{m.name}"] = m.vs_sim_cosine
        if self.detection is not None:
            for key in ("map50", "map", "agreement_map50"):
                if getattr(self.detection, key) is not None:
                    flat[key] = getattr(self.detection, key)
        for part in self.slices:
            flat[f"slice_cosine.{part.name}"] = part.worst_cosine
        if self.profile is not None:
            flat.update(self.profile.metrics())
        if self.latency is not None:
            flat["latency.median_ms"] = self.latency["median_ms"]
        return flat

    def to_record(self) -> dict:
        """Everything about this result as plain JSON types (what the JSON and HTML reports hold)."""
        return {
            "spec": self.spec,
            "spec_file": str(self.spec_path) if self.spec_path else None,
            "version": self.version,
            "backend": self.backend,
            "outcome": "passed" if self.passed else "failed",
            "class": self.failure_class,
            "message": self.message,
            "failures": list(self.failures),
            "warnings": list(self.warnings),
            "metrics": {k: json_safe(v) for k, v in self.metrics().items()},
            "outputs": [m.to_dict() for m in self.outputs],
            "slices": [part.to_dict() for part in self.slices],
            "detection": json_safe(self.detection.to_dict()) if self.detection is not None else None,
            "profile": self.profile.to_dict() if self.profile is not None else None,
            "latency": self.latency,
            "localisation": self.localisation,
            "reduction": self.reduction,
            "repro": str(self.repro) if self.repro else None,
            "hints": list(self.hints),
            "thresholds": self.thresholds,
            "comparisons": self.comparisons,
            "fingerprint": self.fingerprint,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "log": str(self.log_path) if self.log_path else None,
            "log_tail": self.log_tail,
            "traceback": self.traceback,
            "cache": self.cache,
            "measurement_cache": self.measurement_cache,
        }

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


_PACKAGE = Path(__file__).resolve().parent
_LIBRARIES = {Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")}


def describe_exception(exc: BaseException) -> Tuple[str, str]:
    """One line for an unexpected exception, saying whose code raised it, and its traceback.

    The innermost frame that is neither the standard library nor an installed package decides:
    pytest-rknn's own (an internal error) or yours (a hook implementation, a conftest)."""
    text = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    trace = "".join(tb.format_exception(type(exc), exc, exc.__traceback__)).rstrip("\n")
    for frame in reversed(tb.extract_tb(exc.__traceback__)):
        path = Path(frame.filename).resolve()
        if _PACKAGE in path.parents:
            return (f"pytest-rknn internal error: {what} (at {path.relative_to(_PACKAGE.parent)}:{frame.lineno}) "
                    f"— please report it, with the traceback from the '{TRACEBACK_SECTION}' section"), trace
        if frame.filename.startswith("<") or any(library in path.parents for library in _LIBRARIES):
            continue
        return (f"{frame.name}() in {frame.filename}:{frame.lineno} raised {what} (code outside pytest-rknn, "
                f"called by it; the traceback is in the '{TRACEBACK_SECTION}' section)"), trace
    return (f"pytest-rknn internal error: {what} — please report it, with the traceback from the "
            f"'{TRACEBACK_SECTION}' section"), trace
