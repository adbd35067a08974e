"""Tolerances -> failure lines. A NaN never passes a threshold."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

from .diagnosis.profile import CpuLayer, Profile
from .errors import SpecError
from .result import OutputMetrics, SliceMetrics, format_cosine
from .spec import Spec


def _check_output_names(spec: Spec, outputs: Sequence[OutputMetrics]) -> None:
    names = [m.name for m in outputs]
    for check_name, check in (("cosine", spec.checks.cosine), ("vs_sim_cosine", spec.checks.vs_sim_cosine),
                              ("max_abs", spec.checks.max_abs)):
        for name in (check.outputs if check else {}):
            if name not in names:
                raise SpecError(spec.path, f"checks.{check_name}.outputs.{name}", f"the model has no output '{name}'",
                                f"its outputs are: {', '.join(names)}")


def evaluate(spec: Spec, outputs: Sequence[OutputMetrics]) -> List[str]:
    """One line per violated check; empty when everything passes."""
    _check_output_names(spec, outputs)
    failures = []
    for m in outputs:
        where = f"output '{m.name}'"
        if m.missing:
            failures.append(f"{where}: no output for {m.missing} of {m.samples} samples")
            continue
        if not m.shape_ok:
            failures.append(f"{where}: shape {tuple(m.shape or ())} does not match the reference {tuple(m.ref_shape)}")
            continue
        if m.nonfinite:
            failures.append(f"{where} sample {m.nonfinite_sample}: {m.nonfinite} NaN/Inf values where the reference "
                            f"is finite")
            continue
        minimum = spec.checks.cosine.outputs.get(m.name, spec.checks.cosine.min)
        if not (m.worst_cosine >= minimum):  # also true for NaN
            why = " (undefined: an all-zero side)" if math.isnan(m.worst_cosine) else ""
            failures.append(f"{where} sample {m.worst_sample} ({m.worst_label}): cosine {format_cosine(m.worst_cosine, minimum)} "
                            f"< min {minimum}{why}")
        vs_sim = spec.checks.vs_sim_cosine
        if vs_sim is not None and m.vs_sim_cosine is not None:  # board items only
            least = vs_sim.outputs.get(m.name, vs_sim.min)
            if not (m.vs_sim_cosine >= least):
                failures.append(f"{where}: board vs simulator cosine {format_cosine(m.vs_sim_cosine, least)} < "
                                f"checks.vs_sim_cosine min {least}, while against onnxruntime it is "
                                f"{format_cosine(m.worst_cosine, minimum)} (min {minimum})")
        if spec.checks.max_abs is not None:
            limit = spec.checks.max_abs.outputs.get(m.name, spec.checks.max_abs.max)
            if not (m.max_abs <= limit):
                failures.append(f"{where}: max abs error {m.max_abs:.6g} > max {limit}")
    return failures


def placement_failures(spec: Spec, profile: Optional[Profile], toolkit: str) -> List[str]:
    """checks.placement against the build's layer table: one line naming every CPU layer beyond what
    it allows, with the toolkit's reason and the `convert.op_target` that would ask for the NPU."""
    check = spec.checks.placement
    if check is None or profile is None:
        return []
    counted = [layer for layer in profile.cpu_layers if not layer.is_allowed(check.allow_cpu)]
    if len(counted) <= check.cpu_ops:
        return []
    asked = {name for name, target in (spec.convert.op_target or {}).items() if target.lower() == "npu"}
    refused = [layer for layer in counted if layer.tensor in asked or layer.node in asked]
    if refused:
        names = ", ".join(f"'{layer.tensor or layer.node}'" for layer in refused)
        return [f"{_count(len(counted))} on the CPU where checks.placement allows {check.cpu_ops}"
                f"{_allowed_note(check.allow_cpu)}: {_described(counted)}; convert.op_target already asks for "
                f"{names} on the NPU and {toolkit} still placed it on the CPU, so the toolkit refuses it there "
                f"(allow it with checks.placement.allow_cpu: [{refused[0].op_type}], or change the model)"]
    fix = ", ".join(f"'{layer.tensor}': 'npu'" for layer in counted if layer.tensor)
    hint = f"; to ask for the NPU, add under convert: op_target: {{{fix}}}" if fix else ""
    return [f"{_count(len(counted))} on the CPU where checks.placement allows {check.cpu_ops}"
            f"{_allowed_note(check.allow_cpu)}: {_described(counted)}{hint}"]


def _count(n: int) -> str:
    return f"{n} layer{'s' if n != 1 else ''}"


def _allowed_note(op_types: List[str]) -> str:
    return f" (besides {', '.join(op_types)})" if op_types else ""


def _described(layers: List[CpuLayer]) -> str:
    def one(layer: CpuLayer) -> str:
        reason = f", toolkit: {layer.reason}" if layer.reason else ", the toolkit gave no reason"
        return f"{layer.op_type} '{layer.node}'{reason}"

    return "; ".join(one(layer) for layer in layers)


def latency_failures(spec: Spec, latency: Optional[dict]) -> List[str]:
    """checks.latency.max_ms against the median inference() time the board measured."""
    limit = spec.checks.latency.max_ms
    if limit is None or latency is None or latency["median_ms"] <= limit:
        return []
    return [f"median inference time on the board {latency['median_ms']:.3g} ms > checks.latency.max_ms {limit:g} "
            f"(p90 {latency['p90_ms']:.3g} ms over {latency['runs']} runs after a warm-up, core mask "
            f"{latency['core_mask']})"]


def slice_failures(spec: Spec, slices: Sequence[SliceMetrics]) -> List[str]:
    """checks.cosine.slices: one line per part whose worst cosine is below its minimum; a part that
    is all zeros on one side (the int8 build rounded it away) is NaN and fails."""
    failures = []
    for check, part in zip(spec.checks.cosine.slices, slices):
        if not (part.worst_cosine >= check.min):
            why = " (undefined: an all-zero side)" if math.isnan(part.worst_cosine) else ""
            stop = "" if check.stop is None else check.stop
            failures.append(f"slice '{check.name}' of output '{check.output}' (axis {check.axis}, {check.start}:{stop}) "
                            f"sample {part.worst_sample} ({part.worst_label}): cosine "
                            f"{format_cosine(part.worst_cosine, check.min)} < min {check.min}{why}")
    return failures
