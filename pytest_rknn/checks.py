"""Tolerances -> failure lines. A NaN never passes a threshold."""

from __future__ import annotations

import math
from typing import List, Sequence

from .errors import SpecError
from .result import OutputMetrics, format_cosine
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
