"""Is a result worse than before? Against the recorded baseline of its own version, and against
another toolkit version (the upgrade gate, `--rknn-compare-to`)."""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple

from .baseline import BaselineStore, rounded
from .errors import ACCURACY, ENV, PERFORMANCE, PLACEMENT, SPEC, RknnError
from .onnx_model import file_sha256
from .result import RunResult
from .spec import Spec

LOWER_IS_BETTER = {"max_abs", "cpu_ops", "cycles", "memory", "latency"}
RELATIVE = {"cycles", "memory", "latency"}  # allowed growth as a fraction of the reference: 0.05 is 5% more
FAMILY_CLASSES = {"cpu_ops": PLACEMENT, "cycles": PERFORMANCE, "memory": PERFORMANCE, "latency": PERFORMANCE}
BASELINE = "baseline"
RERECORD_HINT = "re-record with --rknn-baseline-update"


def family(metric: str) -> str:
    """`cosine.output0` -> `cosine`: the key of the allowed worsening in the spec."""
    return metric.split(".", 1)[0]


def worsening(metric: str, value: float, reference: float) -> float:
    """How much worse `value` is than `reference` (negative when better); for a RELATIVE family, as a
    fraction of the reference."""
    kind = family(metric)
    worse = value - reference if kind in LOWER_IS_BETTER else reference - value
    if kind in RELATIVE:
        return worse / reference if reference > 0 else (math.inf if worse > 0 else 0.0)
    return worse


def failure_class(deltas: Dict[str, dict]) -> str:
    """The class of the first metric that failed: ACCURACY for the numbers, PLACEMENT for CPU layers,
    PERFORMANCE for cycles, memory and latency."""
    failed = [name for name, delta in deltas.items() if delta["failed"]]
    return FAMILY_CLASSES.get(family(failed[0]), ACCURACY) if failed else ACCURACY


SUMMARY_FAMILIES = ("cosine", "vs_sim_cosine", "map50", "agreement_map50")  # others only when they fail


def worst_per_family(deltas: Dict[str, dict]) -> Dict[str, dict]:
    """For a summary: the worst change of each family in SUMMARY_FAMILIES and of any family that
    failed; agreement mAP only when there is no mAP against labels."""
    worst: Dict[str, dict] = {}
    for name, delta in deltas.items():
        kind = family(name)
        if kind not in SUMMARY_FAMILIES and not delta["failed"]:
            continue
        if kind not in worst or _more_worrying(kind, delta, worst[kind]):
            worst[kind] = delta
    if "map50" in worst:
        worst.pop("agreement_map50", None)
    return worst


def _more_worrying(kind: str, a: dict, b: dict) -> bool:
    if a["failed"] != b["failed"]:
        return a["failed"]
    return a["delta"] > b["delta"] if kind in LOWER_IS_BETTER else a["delta"] < b["delta"]


def compare_metrics(current: Dict[str, float], reference: Dict[str, float], allowed: Dict[str, float],
                    label: str, gate_key: str) -> Tuple[Dict[str, dict], List[str]]:
    """Per metric both values and the delta; a failure line per metric worse by more than allowed."""
    deltas, failures = {}, []
    for name, current_value in current.items():
        # Both at the baseline file's precision, so an unchanged result reads as exactly equal.
        ref = _number(rounded(reference.get(name)))
        value = _number(rounded(current_value))
        if ref is None or value is None:
            continue
        limit = allowed.get(family(name))
        worse = worsening(name, value, ref)
        failed = limit is not None and worse > limit * (1 + 1e-9) + 1e-12
        deltas[name] = {"value": value, "reference": ref, "delta": value - ref, "allowed": limit, "failed": failed}
        if failed and limit is not None:  # failed: there is a limit
            failures.append(f"{label}: {name} {value:.6g} vs {ref:.6g} ({_worse_text(name, worse)}; "
                            f"{gate_key}.{family(name)} allows {_allowed_text(name, limit)})")
    return deltas, failures


def _worse_text(metric: str, worse: float) -> str:
    if family(metric) in RELATIVE:
        return f"{worse:.1%} more" if math.isfinite(worse) else "more, from 0"
    return f"worse by {worse:.4g}"


def _allowed_text(metric: str, limit: float) -> str:
    return f"{limit:.0%} more" if family(metric) in RELATIVE else f"{limit:g}"


def _number(value) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class Comparisons:
    def __init__(self, baseline: Optional[BaselineStore], compare_to: Optional[str], versions_in_run: List[str],
                 updating_baseline: bool = False, strict_baseline: bool = False):
        self.baseline = baseline
        self.compare_to = compare_to
        self.versions_in_run = versions_in_run
        self.updating_baseline = updating_baseline
        self.strict_baseline = strict_baseline  # a missing or mismatched baseline fails (SPEC) instead of warning

    def apply(self, spec: Spec, result: RunResult, measure: Callable[[str], RunResult]) -> None:
        """Add comparisons (and failures) to a result that has metrics; `spec` is for its version."""
        try:
            if self.baseline is not None and not self.updating_baseline:
                self._against_baseline(spec, result)
            if self.compare_to and result.version != self.compare_to:
                self._against_version(spec, result, measure)
        except RknnError as exc:  # an unreadable baseline file
            result.add_failures([exc.message])
            result.failure_class = exc.failure_class

    def _against_baseline(self, spec: Spec, result: RunResult) -> None:
        assert self.baseline is not None  # apply() asks only with a baseline
        entry, why = self.baseline.lookup(result.spec, _spec_file(result), result.version, result.backend,
                                          result.fingerprint["model_sha256"], result.fingerprint["config_hash"])
        path = self.baseline.shown(self.baseline.file_for(result.spec, _spec_file(result)))
        if entry is None:
            result.comparisons.append({"against": BASELINE, "source": path, "missing": why})
            if self.strict_baseline:
                result.add_failures([f"{why} (--rknn-baseline-strict: every item needs its baseline)"], SPEC)
            else:
                result.warnings.append(why)
            return
        deltas, failures = compare_metrics(result.metrics(), entry["metrics"], spec.baseline_gate.allowed(),
                                           f"{BASELINE} {path}", "baseline_gate")
        failures = _with_cpu_layers(failures, result)
        result.comparisons.append({"against": BASELINE, "source": path, "deltas": deltas})
        if failures:
            failures[-1] += f"; if this is expected, {RERECORD_HINT}"
        result.add_failures(failures, failure_class(deltas))

    def _against_version(self, spec: Spec, result: RunResult, measure: Callable[[str], RunResult]) -> None:
        other = self.compare_to
        reference, source, failed = self._reference(spec, result, measure)
        if reference is None:
            assert failed is not None  # _reference returns the failed result with no metrics
            why = f"its result has no metrics ([{failed.failure_class}] {failed.message})"
            result.comparisons.append({"against": other, "source": source, "missing": why})
            self._not_compared(result, why, failed.failure_class or ENV)
            return
        deltas, failures = compare_metrics(result.metrics(), reference, spec.gate.allowed(),
                                           f"upgrade gate vs {other} ({source})", "gate")
        failures = _with_cpu_layers(failures, result)
        result.comparisons.append({"against": other, "source": source, "deltas": deltas})
        result.add_failures(failures, failure_class(deltas))

    def _not_compared(self, result: RunResult, why: str, failure_class: str) -> None:
        """When the compare-to version is tested in this run, its own items fail and say why: a warning
        here is enough. Otherwise this item is the only place where its failure can show, and a gate
        that compared nothing must not pass: the item fails, in the class of that failure."""
        other = self.compare_to
        if other in self.versions_in_run:
            result.warnings.append(f"cannot compare with {other}: {why}")
            return
        line = (f"upgrade gate vs {other}: cannot compare, {why}, so the gate compared nothing "
                f"(make {other} run this spec, or leave out --rknn-compare-to)")
        if result.failure_class is None:
            result.failure_class, result.message = failure_class, line
        result.failures.append(line)

    def _reference(self, spec: Spec, result: RunResult, measure: Callable[[str], RunResult]
                   ) -> Tuple[Optional[Dict[str, float]], str, Optional[RunResult]]:
        """The compare-to version's metrics: from this run if it runs that version, else from the
        baseline, else measured now; or None and the compare-to's failed result."""
        other = self.compare_to
        assert other is not None  # apply() asks only with --rknn-compare-to
        if self.baseline is not None and other not in self.versions_in_run:
            spec_other = spec.for_version(other)
            entry, _ = self.baseline.lookup(result.spec, _spec_file(result), other, result.backend,
                                            file_sha256(spec_other.model_path), spec_other.metrics_config_hash())
            if entry is not None:
                return entry["metrics"], BASELINE, None  # lookup() finds entries with metrics only
        measured = measure(other)
        if not measured.metrics():
            return None, "this run", measured
        return measured.metrics(), "this run", None


def _with_cpu_layers(failures: List[str], result: RunResult) -> List[str]:
    """A failed cpu_ops line names the layers that run on the CPU now, with the toolkit's reasons."""
    layers = result.profile.cpu_layers if result.profile is not None else []
    named = "; ".join(f"{layer.op_type} '{layer.node}'" + (f" ({layer.reason})" if layer.reason else "")
                      for layer in layers)
    return [f"{line}; on the CPU now: {named}" if ": cpu_ops " in line and named else line for line in failures]


def _spec_file(result: RunResult) -> Optional[str]:
    return str(result.spec_path) if result.spec_path else None
