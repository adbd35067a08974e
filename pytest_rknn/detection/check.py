"""The `checks.yolov5` check: detections of a backend against onnxruntime's (same run) and
against ground truth, with per-slice cosines and pictures of the worst images. Measuring
(run_detection_check) and gating (detection_failures) are apart, so stored figures can be
judged against new gates."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import SpecError
from ..metrics import cosine
from ..spec import ImageInput, Spec, YoloV5Check
from . import yolov5
from .geometry import to_original
from .labels import load_ground_truth
from .metrics import agreement_map, coco_map
from .nms import non_max_suppression
from .overlay import draw_side_by_side

Detections = Dict[str, np.ndarray]  # image name -> (M, 6): x1, y1, x2, y2, score, class


@dataclass
class DetectionMetrics:
    layout: str
    counts: List[Tuple[str, int, int]]  # image, detections, onnxruntime's detections
    map50: Optional[float] = None  # against ground truth (None without labels)
    map: Optional[float] = None
    ref_map50: Optional[float] = None  # onnxruntime's, against the same ground truth
    ref_map: Optional[float] = None
    agreement_map50: float = float("nan")  # against onnxruntime's detections
    agreement_map: float = float("nan")
    slice_cosines: Dict[str, Dict[str, float]] = field(default_factory=dict)  # output -> slice -> worst cosine
    overlays: List[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DetectionSetup:
    """Everything about a spec that detection needs, checked once."""

    check: YoloV5Check
    layout: str
    input_hw: Tuple[int, int]
    letterboxed: bool
    image_paths: List[str]
    ground_truth: Optional[dict]
    class_names: Optional[List[str]]  # the labels', else the model metadata's; None: overlays show class ids
    num_classes: int
    reference_map: Optional[Tuple[float, float]] = None  # onnxruntime's mAP@0.5, @0.5:0.95 against the labels


def setup(spec: Spec, model, inputs, output_shapes) -> DetectionSetup:
    check = spec.checks.yolov5
    assert check is not None  # asked for a spec with checks.yolov5 only
    field_name = "checks.yolov5"
    images = [(name, source) for name, source in spec.inputs.items() if isinstance(source, ImageInput)]
    if len(model.inputs) != 1 or not images:
        raise SpecError(spec.path, field_name, "needs a model with one image input given as `images:`",
                        "write `inputs: {images: {images: 'val/*.jpg', letterbox: 640}}`")
    input_name, source = images[0]
    names = [Path(path).name for path in inputs.image_paths]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # detections are kept per file name: one image would be judged in place of the other
        raise SpecError(spec.path, f"inputs.{input_name}.images", f"the detection check tells images apart by file "
                        f"name, and these names occur more than once: {', '.join(repeated)}",
                        "give every image its own file name")
    try:
        layout = yolov5.detect_layout(output_shapes) if check.layout == "auto" else check.layout
    except ValueError as exc:
        raise SpecError(spec.path, f"{field_name}.layout", str(exc)) from None
    tensor = model.inputs[0]
    input_hw = tuple(source.letterbox or source.size or (tensor.shape[2], tensor.shape[3]))
    num_classes = yolov5.num_classes(output_shapes, layout)
    ground_truth, class_names = None, None
    if check.labels:
        labels_path = spec.resolve(check.labels)
        if not labels_path.exists():
            raise SpecError(spec.path, f"{field_name}.labels", f"not found: {labels_path}",
                            "give a COCO json or a folder of YOLO txt files, relative to the spec")
        try:
            ground_truth, class_names = load_ground_truth(labels_path, inputs.image_paths, num_classes)
        except ValueError as exc:
            raise SpecError(spec.path, f"{field_name}.labels", str(exc)) from None
    if class_names is None and getattr(model, "class_names", None):  # an ultralytics export's `names` metadata
        class_names = list(model.class_names)
    return DetectionSetup(check, layout, input_hw, bool(source.letterbox), list(inputs.image_paths), ground_truth,
                          class_names, num_classes)


def detect(setup: DetectionSetup, outputs: List[List[np.ndarray]]) -> Detections:
    """Decode, NMS and map back to original image coordinates, per sample."""
    from PIL import Image

    check = setup.check
    anchors = check.anchors or yolov5.DEFAULT_ANCHORS
    strides = check.strides or yolov5.DEFAULT_STRIDES
    found = {}
    for path, sample in zip(setup.image_paths, outputs):
        pred = yolov5.decode(sample, setup.layout, anchors, strides)
        boxes = non_max_suppression(pred, check.conf_threshold, check.iou_threshold, check.max_detections)
        with Image.open(path) as image:
            original_hw = (image.height, image.width)
        boxes = boxes.copy()
        boxes[:, :4] = to_original(boxes[:, :4], original_hw, setup.input_hw, setup.letterboxed)
        found[Path(path).name] = boxes
    return found


def slice_cosines(setup: DetectionSetup, names, reference, outputs) -> Dict[str, Dict[str, float]]:
    """Worst-sample cosine of each part of each output: a broken box scale shows here."""
    result = {}
    for k, name in enumerate(names):
        worst: Dict[str, float] = {}
        for ref_sample, out_sample in zip(reference, outputs):
            ref_parts = yolov5.split_slices(ref_sample[k], setup.layout)
            out_parts = yolov5.split_slices(out_sample[k], setup.layout)
            for part, ref_values in ref_parts.items():
                value = cosine(out_parts[part], ref_values)
                previous = worst.get(part, math.inf)
                worst[part] = value if math.isnan(value) or value < previous else previous
        result[name] = worst
    return result


def measure_maps(setup: DetectionSetup, reference_detections: Detections, detections: Detections,
                 metrics: DetectionMetrics) -> None:
    """Fill the mAP figures into `metrics`."""
    metrics.agreement_map50, metrics.agreement_map = _pair(agreement_map(detections, reference_detections,
                                                                         setup.num_classes))
    if setup.ground_truth is not None:
        metrics.map50, metrics.map = _pair(coco_map(detections, setup.ground_truth, setup.num_classes))
        if setup.reference_map is None:  # the same for every backend of the spec: measure it once
            setup.reference_map = _pair(coco_map(reference_detections, setup.ground_truth, setup.num_classes))
        metrics.ref_map50, metrics.ref_map = setup.reference_map


def map_thresholds(check: YoloV5Check, metrics: DetectionMetrics) -> Dict[str, float]:
    """The lowest value each mAP may have under `check`'s gates (for the reports' lines): `map50` with
    labels, else `agreement_map50`; plus `agreement_map50` for min_agreement_map50."""
    labelled = metrics.map50 is not None
    reference = metrics.ref_map50 if labelled else 1.0
    limits: Dict[str, float] = {}
    if reference is not None and math.isfinite(reference):
        candidates = [check.map50_ratio * reference if check.map50_ratio is not None else None,
                      reference - check.max_map50_drop if check.max_map50_drop is not None else None]
        lows = [low for low in candidates if low is not None]
        if lows:
            limits["map50" if labelled else "agreement_map50"] = max(lows)
    if check.min_agreement_map50 is not None:
        limits["agreement_map50"] = max(limits.get("agreement_map50", 0.0), check.min_agreement_map50)
    return limits


def detection_failures(check: YoloV5Check, metrics: DetectionMetrics) -> List[str]:
    """One line per violated gate of `check` for these figures (which may have been measured in an
    earlier run, with other gates)."""
    if metrics.map50 is not None:
        # NaN without onnxruntime's figure (a stored record): the gates below fail rather than pass
        reference = metrics.ref_map50 if metrics.ref_map50 is not None else math.nan
        value, what = metrics.map50, "mAP@0.5"
    else:  # without labels, onnxruntime's detections are the truth (its own score is 1.0)
        value, reference, what = metrics.agreement_map50, 1.0, "agreement mAP@0.5 with onnxruntime"
    summary = _map_summary(metrics)
    failures = []
    if check.count_tolerance is not None:
        off = [(image, n, n_ref) for image, n, n_ref in metrics.counts if abs(n - n_ref) > check.count_tolerance]
        if off:
            shown = ", ".join(f"{image}: {n} vs {n_ref}" for image, n, n_ref in off[:5])
            more = f", and {len(off) - 5} more" if len(off) > 5 else ""
            failures.append(f"yolov5: detection counts differ by more than {check.count_tolerance} on {len(off)} of "
                            f"{len(metrics.counts)} images (RKNN vs onnxruntime: {shown}{more}); {summary}")
    if check.map50_ratio is not None and not (value >= check.map50_ratio * reference):
        failures.append(f"yolov5: {what} {value:.4f} < {check.map50_ratio} x onnxruntime's {reference:.4f}; {summary}")
    if check.max_map50_drop is not None and not (reference - value <= check.max_map50_drop):
        failures.append(f"yolov5: {what} dropped by {reference - value:.4f} ({reference:.4f} -> {value:.4f}) > max "
                        f"{check.max_map50_drop}; {summary}")
    least = check.min_agreement_map50
    if least is not None and not (metrics.agreement_map50 >= least):
        failures.append(f"yolov5: agreement mAP@0.5 with onnxruntime {metrics.agreement_map50:.4f} < "
                        f"min_agreement_map50 {least}; {summary}")
    return failures


def _pair(result: dict) -> Tuple[float, float]:
    return result["map50"], result["map"]


def _map_summary(m: DetectionMetrics) -> str:
    if m.map50 is not None:
        reference = "unknown" if m.ref_map50 is None else f"{m.ref_map50:.4f}"
        return f"mAP@0.5 {m.map50:.4f} vs onnxruntime {reference} (ground truth)"
    return f"agreement mAP@0.5 with onnxruntime {m.agreement_map50:.4f}"


def run_detection_check(setup: DetectionSetup, names, reference: List[List[np.ndarray]],
                        reference_detections: Detections, outputs: List[List[np.ndarray]],
                        overlay_dir: Path) -> DetectionMetrics:
    """The detection figures of a backend's outputs, and pictures of the worst images; the gates are
    detection_failures()."""
    started = time.monotonic()
    # The toolkit may add or drop size-1 axes; the decoder wants the model's own shapes.
    outputs = [[np.asarray(o).reshape(r.shape) for o, r in zip(out, ref)] for out, ref in zip(outputs, reference)]
    detections = detect(setup, outputs)
    counts = [(image, len(detections[image]), len(reference_detections[image])) for image in reference_detections]
    metrics = DetectionMetrics(layout=setup.layout, counts=counts,
                               slice_cosines=slice_cosines(setup, names, reference, outputs))
    measure_maps(setup, reference_detections, detections, metrics)
    metrics.overlays = _draw_worst(setup, reference_detections, detections, counts, overlay_dir)
    metrics.seconds = time.monotonic() - started
    return metrics


def _draw_worst(setup: DetectionSetup, reference: Detections, detections: Detections, counts, folder: Path):
    worst = sorted(counts, key=lambda c: (-abs(c[1] - c[2]), c[0]))[: setup.check.overlays]
    by_name = {Path(p).name: p for p in setup.image_paths}
    paths = []
    for rank, (image, _, _) in enumerate(worst):
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{rank:02d}_{Path(image).stem}.png"
        draw_side_by_side(by_name[image], reference[image], detections[image], out, class_names=setup.class_names)
        paths.append(str(out))
    return paths
