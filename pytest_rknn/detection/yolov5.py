"""YOLOv5 outputs: which export layout a model has, and its decoding into candidate boxes.

Two layouts exist in the wild:
- "heads": three raw outputs (1, 3*(5+C), H, W), sigmoid already applied inside the model
  (the rknn_model_zoo export); the box formula and the anchors are applied here.
- "single": one output (1, N, 5+C) with the Detect layer inside (the ultralytics export);
  rows are already cx, cy, w, h in input pixels, objectness, class scores.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

DEFAULT_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
DEFAULT_STRIDES = [8, 16, 32]

ANCHORS_PER_CELL = 3
BOX_FIELDS = 5  # cx, cy, w, h, objectness

HEADS = "heads"
SINGLE = "single"


def detect_layout(shapes: Sequence[Sequence[int]]) -> str:
    """'heads' for three (1, 3*(5+C), H, W) outputs, 'single' for one (1, N, 5+C) output."""
    shapes = [tuple(shape) for shape in shapes]
    if len(shapes) == 1 and _is_single(shapes[0]):
        return SINGLE
    if len(shapes) == 3 and all(_is_head(shape) for shape in shapes) and len({s[1] for s in shapes}) == 1:
        return HEADS
    raise ValueError(
        f"not a YOLOv5 output layout: got {len(shapes)} output(s) with shapes {_shapes_text(shapes)}; "
        f"expected three raw heads (1, 3*(5+C), H, W) with the same channel count (rknn_model_zoo export) "
        f"or one output (1, N, 5+C) (ultralytics export with Detect inside)")


def num_classes(shapes: Sequence[Sequence[int]], layout: str) -> int:
    """The class count C read from the output shapes."""
    shapes = [tuple(shape) for shape in shapes]
    if layout == HEADS:
        return shapes[0][1] // ANCHORS_PER_CELL - BOX_FIELDS
    if layout == SINGLE:
        return shapes[0][2] - BOX_FIELDS
    raise ValueError(f"unknown YOLOv5 layout {layout!r}: expected '{HEADS}' or '{SINGLE}'")


def decode(outputs: Sequence[np.ndarray], layout: Optional[str] = None,
           anchors: Sequence[Sequence[float]] = DEFAULT_ANCHORS,
           strides: Sequence[int] = DEFAULT_STRIDES) -> np.ndarray:
    """Candidate rows (N, 5+C), float32: cx, cy, w, h in input pixels, objectness, class scores.

    Heads rows come in the order the ultralytics Detect layer uses (stride, anchor, y, x),
    so both layouts of one model give comparable rows."""
    shapes = [np.shape(output) for output in outputs]
    layout = layout or detect_layout(shapes)
    if layout == SINGLE:
        if len(outputs) != 1 or not _is_single(shapes[0]):
            raise ValueError(f"layout 'single' needs one (1, N, 5+C) output, got {_shapes_text(shapes)}")
        return np.asarray(outputs[0], dtype=np.float32)[0]
    if layout != HEADS:
        raise ValueError(f"unknown YOLOv5 layout {layout!r}: expected '{HEADS}' or '{SINGLE}'")
    if detect_layout(shapes) != HEADS:
        raise ValueError(f"layout 'heads' needs three (1, 3*(5+C), H, W) outputs, got {_shapes_text(shapes)}")
    heads = _heads_by_stride(outputs)
    _check_strides(heads, anchors, strides)
    return np.concatenate([_decode_head(head, anchor_row, stride)
                           for head, anchor_row, stride in zip(heads, anchors, strides)])


def split_slices(output: np.ndarray, layout: str) -> Dict[str, np.ndarray]:
    """The box, objectness and class parts of one raw output, for cosine per slice.

    Heads: channel groups over all anchors, shapes (3, 4, H, W), (3, 1, H, W), (3, C, H, W).
    Single: column groups, shapes (N, 4), (N, 1), (N, C)."""
    output = np.asarray(output)
    if layout == HEADS:
        if not _is_head(output.shape):
            raise ValueError(f"a 'heads' output must be (1, 3*(5+C), H, W), got {tuple(output.shape)}")
        _, channels, height, width = output.shape
        rows = output.reshape(ANCHORS_PER_CELL, channels // ANCHORS_PER_CELL, height, width)
        return {"boxes": rows[:, 0:4], "objectness": rows[:, 4:5], "classes": rows[:, 5:]}
    if layout == SINGLE:
        if not _is_single(output.shape):
            raise ValueError(f"a 'single' output must be (1, N, 5+C), got {tuple(output.shape)}")
        rows = output[0]
        return {"boxes": rows[:, 0:4], "objectness": rows[:, 4:5], "classes": rows[:, 5:]}
    raise ValueError(f"unknown YOLOv5 layout {layout!r}: expected '{HEADS}' or '{SINGLE}'")


def _is_single(shape) -> bool:
    return len(shape) == 3 and shape[0] == 1 and shape[1] >= 1 and shape[2] > BOX_FIELDS


def _is_head(shape) -> bool:
    return (len(shape) == 4 and shape[0] == 1 and shape[1] % ANCHORS_PER_CELL == 0
            and shape[1] // ANCHORS_PER_CELL > BOX_FIELDS and shape[2] >= 1 and shape[3] >= 1)


def _shapes_text(shapes) -> str:
    return ", ".join(str(tuple(shape)) for shape in shapes) or "none"


def _heads_by_stride(outputs: Sequence[np.ndarray]) -> List[np.ndarray]:
    # Output order differs between exports and toolkits; the finest grid is always stride 8.
    return sorted((np.asarray(output) for output in outputs), key=lambda head: (-head.shape[2], -head.shape[3]))


def _check_strides(heads: List[np.ndarray], anchors, strides) -> None:
    if len(strides) != 3 or len(anchors) != 3 or any(len(row) != 2 * ANCHORS_PER_CELL for row in anchors):
        raise ValueError(f"YOLOv5 heads need 3 strides and 3 rows of {ANCHORS_PER_CELL} anchor pairs, "
                         f"got strides {list(strides)} and anchors {[list(row) for row in anchors]}")
    input_sizes = {(head.shape[2] * stride, head.shape[3] * stride) for head, stride in zip(heads, strides)}
    if len(input_sizes) != 1:
        grids = ", ".join(f"{head.shape[2]}x{head.shape[3]}" for head in heads)
        raise ValueError(f"the head grids {grids} do not fit strides {list(strides)}: "
                         f"grid x stride should give the same input size for every head")


def _decode_head(head: np.ndarray, anchor_row: Sequence[float], stride: int) -> np.ndarray:
    _, channels, height, width = head.shape
    fields = channels // ANCHORS_PER_CELL
    values = head.reshape(ANCHORS_PER_CELL, fields, height, width).astype(np.float32)
    grid_y, grid_x = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32),
                                 indexing="ij")
    anchor_wh = np.asarray(anchor_row, dtype=np.float32).reshape(ANCHORS_PER_CELL, 2, 1, 1)
    decoded = values.copy()
    decoded[:, 0] = (values[:, 0] * 2 - 0.5 + grid_x) * stride
    decoded[:, 1] = (values[:, 1] * 2 - 0.5 + grid_y) * stride
    decoded[:, 2:4] = (values[:, 2:4] * 2) ** 2 * anchor_wh
    # (anchor, field, y, x) -> rows in (anchor, y, x) order, as the Detect layer flattens them.
    return decoded.transpose(0, 2, 3, 1).reshape(-1, fields)
