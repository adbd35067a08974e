"""From model-input pixels back to original-image pixels, for the resizes `inputs.py` does."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def letterbox_params(original_hw: Sequence[int], input_hw: Sequence[int]) -> Tuple[float, int, int]:
    """(scale, pad_x, pad_y) of the centred letterbox `pytest_rknn.inputs._letterbox` makes."""
    scale, _, _, pad_x, pad_y = _letterbox_geometry(original_hw, input_hw)
    return scale, pad_x, pad_y


def to_original(boxes_xyxy: np.ndarray, original_hw: Sequence[int], input_hw: Sequence[int],
                letterboxed: bool = True) -> np.ndarray:
    """Boxes in original-image pixels, clipped to the image.

    Only the first four columns (x1, y1, x2, y2) change, so (M, 6) detections can be
    passed whole; the other columns are returned as they are."""
    boxes = np.array(boxes_xyxy, dtype=np.float64)
    if boxes.size == 0 and boxes.ndim < 2:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] < 4:
        raise ValueError(f"expected boxes (M, 4+) as x1, y1, x2, y2, ..., got shape {np.shape(boxes_xyxy)}")
    height, width = original_hw
    input_h, input_w = input_hw
    if letterboxed:
        _, new_w, new_h, pad_x, pad_y = _letterbox_geometry(original_hw, input_hw)
        offset_x, offset_y = pad_x, pad_y
        # The pasted picture is new_w x new_h, so each axis has its own exact factor;
        # the single `scale` differs from it by the rounding of the new size.
        factor_x, factor_y = width / new_w, height / new_h
    else:
        offset_x, offset_y = 0, 0
        factor_x, factor_y = width / input_w, height / input_h
    boxes[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - offset_x) * factor_x, 0, width)
    boxes[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - offset_y) * factor_y, 0, height)
    return boxes


def _letterbox_geometry(original_hw, input_hw) -> Tuple[float, int, int, int, int]:
    # Same arithmetic as inputs._letterbox, including Python's round-half-to-even.
    height, width = original_hw
    input_h, input_w = input_hw
    scale = min(input_h / height, input_w / width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return scale, new_w, new_h, (input_w - new_w) // 2, (input_h - new_h) // 2
