"""Hints: what an accuracy failure probably means, and the fix, from the arrays and the spec.

A hint never decides an outcome; the judge shows the hints of a failed item under its message
(`hint: ...`). They are computed with the measurement and stored with it, since they need the
reference's arrays, which a warm rerun does not compute again.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..detection import yolov5
from ..inputs import InputSet
from ..onnx_model import ModelInfo
from ..spec import ImageInput, QuantizeSpec, Spec

RANGE_RATIO = 50.0  # parts of one int8 tensor whose spans differ this much: the small ones round away
SPLIT_FIX = ("export the model without the layer that concatenates them (for YOLOv5: the three heads of the "
             "rknn_model_zoo layout, checks.yolov5.layout: heads) and join them on the host, or keep that output "
             "out of int8 (a float build, or hybrid quantisation of its last layers)")


def hints_for(spec: Spec, model: ModelInfo, inputs: InputSet, reference, measured) -> List[str]:
    """Every hint that applies; `reference` is the judge's Reference, `measured` its Measurement."""
    int8 = isinstance(spec.convert.quantize, QuantizeSpec)
    found = _nothing_detected(measured.detection, int8)
    if int8:
        found += _mixed_ranges(spec, model, reference, measured)
        found += _calibration_not_like_inputs(spec)
    found += _mean_std_scale(spec, inputs)
    return found


def _nothing_detected(detection, int8: bool) -> List[str]:
    if detection is None:
        return []
    found = sum(n for _, n, _ in detection.counts)
    expected = sum(n_ref for _, _, n_ref in detection.counts)
    if found or not expected:
        return []
    line = (f"RKNN detected nothing: 0 of the {expected} objects onnxruntime found on {len(detection.counts)} "
            f"images")
    if int8 and detection.layout == yolov5.SINGLE:
        line += (f"; a single output holds pixel boxes and 0..1 scores, and int8 keeps only the boxes: "
                 f"{SPLIT_FIX}")
    return [line]


def _mixed_ranges(spec: Spec, model: ModelInfo, reference, measured) -> List[str]:
    """An output whose parts (a detector's boxes and scores, or the spec's slices) span very
    different ranges: in an int8 build one scale covers them all."""
    parts: Dict[str, Dict[str, Tuple[float, float]]] = {}
    names = [t.name for t in model.outputs]
    if measured.detection is not None and measured.detection.layout == yolov5.SINGLE:
        parts[names[0]] = _ranges([yolov5.split_slices(sample[0], yolov5.SINGLE) for sample in reference.outputs])
    for part in measured.slices:
        parts.setdefault(part.output, {})[part.name] = tuple(part.ref_range)
    hints = []
    for output, ranges in parts.items():
        spans = {name: high - low for name, (low, high) in ranges.items()}
        widest, narrowest = max(spans, key=spans.__getitem__), min(spans, key=spans.__getitem__)
        if spans[narrowest] > 0 and spans[widest] / spans[narrowest] >= RANGE_RATIO:
            shown = ", ".join(f"{name} {low:.3g}..{high:.3g}" for name, (low, high) in ranges.items())
            step = spans[widest] / 255
            hints.append(f"output '{output}' holds parts of very different ranges in one int8 tensor ({shown}): "
                         f"one scale of about {step:.3g} per step rounds '{narrowest}' away; {SPLIT_FIX}")
    return hints


def _ranges(samples: Sequence[Dict[str, np.ndarray]]) -> Dict[str, Tuple[float, float]]:
    return {name: (min(float(np.min(s[name])) for s in samples), max(float(np.max(s[name])) for s in samples))
            for name in samples[0]}


def _calibration_not_like_inputs(spec: Spec) -> List[str]:
    quantize = spec.convert.quantize
    if not isinstance(quantize, QuantizeSpec) or quantize.preprocess:  # an int8 build's only (hints_for)
        return []
    boxed = [name for name, source in spec.inputs.items() if isinstance(source, ImageInput) and source.letterbox]
    if not boxed:
        return []
    return [f"the evaluation images of '{boxed[0]}' are letterboxed, and with convert.quantize.preprocess: false "
            f"the toolkit loads the calibration images itself (stretched to the input size): the int8 build is "
            f"calibrated on other pixels than it is tested on; remove `preprocess: false`"]


def _mean_std_scale(spec: Spec, inputs: InputSet) -> List[str]:
    """Normalisation that looks like it was written for data of another scale."""
    hints = []
    for index, name in enumerate(inputs.names):
        mean = _values(spec.convert.mean_values, index)
        std = _values(spec.convert.std_values, index)
        if mean is None and std is None or not inputs.samples:
            continue
        arrays = [sample[index] for sample in inputs.samples]
        high = max(float(np.max(a)) for a in arrays)
        low = min(float(np.min(a)) for a in arrays)
        mean, std = mean or [0.0], std or [1.0]
        if high <= 1.0 and (max(mean) > 1.0 or max(std) > 2.0):
            hints.append(f"input '{name}' holds values in {low:.3g}..{high:.3g}, but convert.mean_values {mean} / "
                         f"std_values {std} are for 0..255 data: the NPU sees almost nothing but the mean; give "
                         f"0..255 data (images), or scale mean/std down by 255")
        elif high > 2.0 and max(std) <= 1.0 and max(abs(m) for m in mean) <= 1.0:
            hints.append(f"input '{name}' holds values in {low:.3g}..{high:.3g} and convert.mean_values/std_values "
                         f"({mean} / {std}) leave them so: if the model expects 0..1, use std_values: "
                         f"[[255, 255, 255]]")
    return hints


def _values(lists, index: int):
    return [float(v) for v in lists[index]] if lists and index < len(lists) else None
