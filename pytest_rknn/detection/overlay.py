"""A picture of two detection sets on the same image, side by side, for a report."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

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
    if boxes is None or np.size(boxes) == 0:
        return
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    left, top = origin
    width, height = image_size
    for x1, y1, x2, y2, score, class_id in boxes[np.argsort(boxes[:, 4], kind="stable")]:  # best drawn last, on top
        colour = class_colour(class_id)
        # Clip to the panel so a box never spills into the other picture.
        x1, x2 = (int(round(min(max(v, 0), width - 1))) + left for v in (x1, x2))
        y1, y2 = (int(round(min(max(v, 0), height - 1))) + top for v in (y1, y2))
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line_width)
        known = class_names and 0 <= int(class_id) < len(class_names)
        name = class_names[int(class_id)] if known else str(int(class_id))
        text = f"{name} {score:.2f}"
        text_left, text_top, text_right, text_bottom = draw.textbbox((0, 0), text, font=font)
        label_w, label_h = text_right - text_left + 4, text_bottom - text_top + 4
        label_y = y1 - label_h if y1 - label_h >= top else y1  # above the box, or inside when at the top edge
        label_x = max(left, min(x1, left + width - label_w))  # kept inside its own panel
        draw.rectangle((label_x, label_y, label_x + label_w - 1, label_y + label_h - 1), fill=colour)
        draw.text((label_x + 2 - text_left, label_y + 2 - text_top), text, fill=_text_colour(colour), font=font)


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
