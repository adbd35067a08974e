"""Tensor metrics per output: shape, non-finite counts, cosine per sample, abs errors.
Knows nothing about backends: it compares two lists of arrays."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np

from .result import OutputMetrics, SliceMetrics


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity in float64; NaN when either side is all zeros (undefined)."""
    a = a.ravel().astype(np.float64)
    b = b.ravel().astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0 or not (math.isfinite(na) and math.isfinite(nb)):
        return float("nan")
    return float(np.dot(a, b) / (na * nb))


def _same_shape(ref: np.ndarray, got: np.ndarray) -> bool:
    # The toolkit sometimes drops or adds size-1 axes; the values are the same.
    return ref.shape == got.shape or (ref.size == got.size and
                                      tuple(d for d in ref.shape if d != 1) == tuple(d for d in got.shape if d != 1))


def compare_output(name: str, reference: Sequence[np.ndarray], got: Sequence[Optional[np.ndarray]],
                   labels: Sequence[str]) -> OutputMetrics:
    """Compare one output across all samples."""
    metrics = OutputMetrics(name=name, ref_shape=list(reference[0].shape), samples=len(reference))
    cosines: List[float] = []
    abs_max, abs_sum, abs_count = 0.0, 0.0, 0
    for index, (ref, out) in enumerate(zip(reference, got)):
        if out is None:
            metrics.missing += 1
            cosines.append(float("nan"))
            continue
        out = np.asarray(out)
        if metrics.shape_ok:  # after a mismatch, the shape that did not match stays (the failure line names it)
            metrics.shape = list(out.shape)
        if not _same_shape(ref, out):
            metrics.shape_ok = False
            cosines.append(float("nan"))
            continue
        out = out.reshape(ref.shape)
        ref_bad = ~np.isfinite(ref)
        out_bad = ~np.isfinite(out)
        metrics.ref_nonfinite += int(ref_bad.sum())
        unexpected = int((out_bad & ~ref_bad).sum())
        if unexpected and metrics.nonfinite_sample is None:
            metrics.nonfinite_sample = index
        metrics.nonfinite += unexpected
        keep = ~(ref_bad | out_bad)
        ref_f, out_f = ref[keep].astype(np.float64), out[keep].astype(np.float64)
        if unexpected:
            cosines.append(float("nan"))
        else:
            value = cosine(out_f, ref_f)
            if math.isnan(value):
                side = "the reference" if not np.any(ref_f) else "the RKNN output"
                metrics.notes.append(f"sample {index} ({labels[index]}): cosine undefined, {side} is all zeros")
            cosines.append(value)
        if ref_f.size:
            diff = np.abs(out_f - ref_f)
            abs_max = max(abs_max, float(diff.max()))
            abs_sum += float(diff.sum())
            abs_count += diff.size
    metrics.cosines = cosines
    worst = min(range(len(cosines)), key=lambda i: -math.inf if math.isnan(cosines[i]) else cosines[i])
    metrics.worst_sample = worst
    metrics.worst_label = labels[worst]
    metrics.worst_cosine = cosines[worst]
    metrics.max_abs = abs_max
    metrics.mean_abs = abs_sum / abs_count if abs_count else float("nan")
    return metrics


def compare_outputs(names: Sequence[str], reference: List[List[np.ndarray]],
                    got: Sequence[Optional[Sequence[np.ndarray]]], labels: Sequence[str]) -> List[OutputMetrics]:
    """reference/got are [sample][output]; a None sample means the backend returned nothing."""
    result = []
    for k, name in enumerate(names):
        ref_k = [sample[k] for sample in reference]
        got_k = [None if s is None or k >= len(s) else s[k] for s in got]
        result.append(compare_output(name, ref_k, got_k, labels))
    return result


def compare_slice(part, index: int, reference: List[List[np.ndarray]], got: Sequence[Optional[Sequence[np.ndarray]]],
                  labels: Sequence[str]) -> SliceMetrics:
    """Cosine per sample of one part of output `index` (a checks.cosine.slices entry), the worst
    sample's, and the reference's value range in that part (for hints). No output, or one of
    another size, is NaN."""
    cosines, low, high = [], math.inf, -math.inf
    for ref_sample, out_sample in zip(reference, got):
        ref = _part(ref_sample[index], part)
        low, high = min(low, float(np.min(ref))), max(high, float(np.max(ref)))
        out = None if out_sample is None or index >= len(out_sample) else np.asarray(out_sample[index])
        if out is None or out.size != ref_sample[index].size:
            cosines.append(float("nan"))
        else:
            cosines.append(cosine(_part(out.reshape(ref_sample[index].shape), part), ref))
    worst = min(range(len(cosines)), key=lambda i: -math.inf if math.isnan(cosines[i]) else cosines[i])
    return SliceMetrics(part.name, part.output, cosines[worst], worst, labels[worst], [low, high])


def _part(array: np.ndarray, part) -> np.ndarray:
    """array[..., start:stop, ...] along part.axis."""
    array = np.asarray(array)
    return np.take(array, range(*slice(part.start, part.stop).indices(array.shape[part.axis])), axis=part.axis)
