"""Detection metrics: COCO mAP through pycocotools, built in memory, and detection counts.

Detections are {image name: (M, 6) array of x1, y1, x2, y2, score, class} in original
image pixels; ground truth is {image name: [(x1, y1, x2, y2, class), ...]} as
`labels.load_ground_truth` gives it. Classes are 0..num_classes-1.
"""

from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

DetectionSet = Mapping[str, Optional[np.ndarray]]
GroundTruthSet = Mapping[str, Sequence[Sequence[float]]]


def coco_map(detections: DetectionSet, ground_truth: GroundTruthSet, num_classes: int) -> Dict[str, float]:
    """{'map50': mAP@0.5, 'map': mAP@0.5:0.95} as COCOeval (bbox, up to 100 detections per image) reports them.

    Images are those of either mapping; an image without ground truth makes every detection
    on it a false positive. No detections at all give 0.0; no ground truth box at all gives
    NaN, since mAP is then undefined."""
    images = list(ground_truth) + [name for name in detections if name not in ground_truth]
    image_ids = {name: index for index, name in enumerate(images, start=1)}
    annotations: List[dict] = []
    for name in images:
        for x1, y1, x2, y2, class_id in ground_truth.get(name, ()):
            width, height = float(x2) - float(x1), float(y2) - float(y1)
            annotations.append({
                # COCOeval marks a matched detection with the annotation id, so ids start at 1.
                "id": len(annotations) + 1, "image_id": image_ids[name],
                "category_id": _category_id(class_id, num_classes, f"ground truth of {name}"),
                "bbox": [float(x1), float(y1), width, height], "area": width * height, "iscrowd": 0})
    if not annotations:
        return {"map50": float("nan"), "map": float("nan")}
    results = []
    for name in images:
        for x1, y1, x2, y2, score, class_id in _rows(detections.get(name), name):
            results.append({"image_id": image_ids[name],
                            "category_id": _category_id(class_id, num_classes, f"detections of {name}"),
                            "bbox": [float(x1), float(y1), float(x2) - float(x1), float(y2) - float(y1)],
                            "score": float(score)})
    if not results:
        return {"map50": 0.0, "map": 0.0}
    return _evaluate(images, annotations, results, num_classes)


def agreement_map(detections: DetectionSet, reference_detections: DetectionSet, num_classes: int) -> Dict[str, float]:
    """coco_map with the reference detections (scores dropped) as ground truth.

    When the reference finds nothing anywhere, agreement is 1.0 if the candidate finds
    nothing too and 0.0 otherwise."""
    reference_boxes = {name: [(x1, y1, x2, y2, class_id) for x1, y1, x2, y2, _, class_id in _rows(rows, name)]
                       for name, rows in reference_detections.items()}
    if not any(reference_boxes.values()):
        found = any(len(_rows(rows, name)) for name, rows in detections.items())
        value = 0.0 if found else 1.0
        return {"map50": value, "map": value}
    return coco_map(detections, reference_boxes, num_classes)


def count_differences(detections: DetectionSet, reference_detections: DetectionSet) -> List[Tuple[str, int, int]]:
    """(image, count, reference count) for every image, reference order first; the caller applies a tolerance."""
    images = list(reference_detections) + [name for name in detections if name not in reference_detections]
    return [(name, len(_rows(detections.get(name), name)), len(_rows(reference_detections.get(name), name)))
            for name in images]


def _rows(rows: Optional[np.ndarray], name: str) -> np.ndarray:
    if rows is None:
        return np.zeros((0, 6))
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        return np.zeros((0, 6))
    if rows.ndim != 2 or rows.shape[1] != 6:
        raise ValueError(f"detections of {name} must be (M, 6) x1, y1, x2, y2, score, class; got shape {rows.shape}")
    return rows


def _category_id(class_id, num_classes: int, where: str) -> int:
    value = float(class_id)
    if not (value.is_integer() and 0 <= value < num_classes):
        raise ValueError(f"{where}: class {class_id} is not one of 0..{num_classes - 1}")
    return int(value) + 1


def _evaluate(images: List[str], annotations: list, results: list, num_classes: int) -> Dict[str, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the stats table
        truth = COCO()
        truth.dataset = {
            "images": [{"id": index, "file_name": name} for index, name in enumerate(images, start=1)],
            "annotations": annotations,
            "categories": [{"id": class_id + 1, "name": str(class_id)} for class_id in range(num_classes)],
        }
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"map50": float(evaluation.stats[1]), "map": float(evaluation.stats[0])}
