"""A picture of two detection sets on the same image, side by side, for a report."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

TITLE_HEIGHT = 24  # px above the two panels
GAP = 8  # px between the panels
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)

# The ultralytics palette: neighbouring class ids get clearly different colours.
PALETTE = ["FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
           "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7"]


def class_colour(class_id: int) -> Tuple[int, int, int]:
    code = PALETTE[int(class_id) % len(PALETTE)]
    return int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16)


def draw_side_by_side(image_path: Union[str, Path], reference: Optional[np.ndarray], candidate: Optional[np.ndarray],
                      out_path: Union[str, Path], class_names: Optional[Sequence[str]] = None,
                      titles: Tuple[str, str] = ("onnxruntime", "RKNN")) -> Path:
    """Write a PNG: the image with `reference` boxes on the left and `candidate` boxes on the right.

    Boxes are (M, 6) x1, y1, x2, y2, score, class in the image's pixels. The file appears
    whole or not at all (written to a temporary file, then renamed)."""
    from PIL import Image, ImageDraw, ImageFont

    with Image.open(image_path) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    canvas = Image.new("RGB", (2 * width + GAP, height + TITLE_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    line_width = max(1, round(max(width, height) / 320))
    for left, title, boxes in ((0, titles[0], reference), (width + GAP, titles[1], candidate)):
        canvas.paste(image, (left, TITLE_HEIGHT))
        draw.text((left + 4, TITLE_HEIGHT // 2), title, fill=TEXT, font=font, anchor="lm")
        _draw_boxes(draw, font, boxes, (left, TITLE_HEIGHT), (width, height), line_width, class_names)
    return _save_atomically(canvas, Path(out_path))


def _draw_boxes(draw, font, boxes, origin, image_size, line_width, class_names) -> None:
    """Boxes first (best last, on top), then their labels (best placed first), so no box covers a label
    and no label covers another where there is room (place_label)."""
    if boxes is None or np.size(boxes) == 0:
        return
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    left, top = origin
    width, height = image_size
    panel = (left, top, left + width, top + height)
    drawn = []
    for x1, y1, x2, y2, score, class_id in boxes[np.argsort(boxes[:, 4], kind="stable")]:
        colour = class_colour(class_id)
        # Clip to the panel so a box never spills into the other picture.
        x1, x2 = (int(round(min(max(v, 0), width - 1))) + left for v in (x1, x2))
        y1, y2 = (int(round(min(max(v, 0), height - 1))) + top for v in (y1, y2))
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line_width)
        drawn.append(((x1, y1, x2, y2), colour, f"{class_label(class_id, class_names)} {score:.2f}"))
    placed: List[Rect] = []
    for box, colour, text in reversed(drawn):
        text_left, text_top, text_right, text_bottom = draw.textbbox((0, 0), text, font=font)
        size = (text_right - text_left + 4, text_bottom - text_top + 4)
        label = place_label(box, size, panel, placed)
        placed.append(label)
        draw.rectangle((label[0], label[1], label[2] - 1, label[3] - 1), fill=colour)
        draw.text((label[0] + 2 - text_left, label[1] + 2 - text_top), text, fill=_text_colour(colour), font=font)


Rect = Tuple[int, int, int, int]  # left, top, right, bottom (right and bottom excluded)


def class_label(class_id, class_names: Optional[Sequence[str]]) -> str:
    """The class's name when `class_names` has it, else its number."""
    index = int(class_id)
    return str(class_names[index]) if class_names and 0 <= index < len(class_names) else str(index)


def place_label(box: Rect, size: Tuple[int, int], panel: Rect, placed: Sequence[Rect]) -> Rect:
    """Where a label of `size` goes for `box`: the first of above the box, inside its top, below the
    box, inside its bottom, then stacked down inside the box (each kept inside the panel) that overlaps
    no label in `placed`; when all do, the one that overlaps them least (the first of those on a tie)."""
    x1, y1, x2, y2 = box
    label_w, label_h = size
    left = max(panel[0], min(x1, panel[2] - label_w))  # kept inside its own panel
    candidates = [y1 - label_h, y1, y2 + 1, y2 + 1 - label_h]
    candidates += [y1 + k * label_h for k in range(1, max(0, (y2 - y1) // max(1, label_h)))]
    rects = []
    for y in candidates:
        y = max(panel[1], min(y, panel[3] - label_h))
        rect = (left, y, left + label_w, y + label_h)
        if rect not in rects:
            rects.append(rect)
    overlaps = [sum(_overlap(rect, other) for other in placed) for rect in rects]
    return rects[overlaps.index(min(overlaps))]


def _overlap(a: Rect, b: Rect) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _text_colour(background: Tuple[int, int, int]) -> Tuple[int, int, int]:
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)


def _save_atomically(canvas, out_path: Path) -> Path:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            canvas.save(stream, format="PNG")
        os.replace(temporary, out_path)
    except BaseException:
        os.unlink(temporary)
        raise
    return out_path
