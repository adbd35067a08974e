"""Confidence filtering and non-maximum suppression with YOLOv5 semantics, in numpy."""

from __future__ import annotations

import numpy as np

DETECTION_COLUMNS = 6  # x1, y1, x2, y2, score, class


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes; 0 where both boxes have no area."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def non_max_suppression(pred: np.ndarray, conf_threshold: float = 0.25, iou_threshold: float = 0.45,
                        max_detections: int = 300, class_agnostic: bool = False) -> np.ndarray:
    """Detections (M, 6): x1, y1, x2, y2, score, class, best score first.

    `pred` is decoded rows (N, 5+C): cx, cy, w, h, objectness, class scores. As in YOLOv5,
    rows need objectness > conf first, then score = objectness * best class score > conf.
    Boxes of different classes never suppress each other unless `class_agnostic`.
    Rows with a non-finite box or score are dropped: a broken conversion must not crash this."""
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim != 2 or pred.shape[1] < 6:
        raise ValueError(f"expected decoded YOLOv5 rows (N, 5+C) with C >= 1, got shape {pred.shape}")
    pred = pred[pred[:, 4] > conf_threshold]
    classes = pred[:, 5:].argmax(axis=1) if len(pred) else np.zeros(0, dtype=np.int64)
    scores = pred[:, 4] * pred[np.arange(len(pred)), 5 + classes]
    boxes = _xywh_to_xyxy(pred[:, :4])
    keep = (scores > conf_threshold) & np.isfinite(scores) & np.isfinite(boxes).all(axis=1)
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]

    order = np.argsort(-scores, kind="stable")
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    kept: list = []
    remaining = np.arange(len(boxes))
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    # Every round keeps the best remaining box, so at most max_detections rounds.
    while len(remaining) and len(kept) < max_detections:
        best, rest = remaining[0], remaining[1:]
        kept.append(best)
        inter = (np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
                 * np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None))
        union = areas[best] + areas[rest] - inter
        overlapping = inter > iou_threshold * union  # IoU > threshold without dividing by a zero union
        if not class_agnostic:
            overlapping &= classes[rest] == classes[best]
        remaining = rest[~overlapping]
    indices = np.asarray(kept, dtype=np.int64)
    return np.column_stack([boxes[indices], scores[indices], classes[indices].astype(np.float64)]).reshape(
        -1, DETECTION_COLUMNS)


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    half = xywh[:, 2:4] / 2
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)
