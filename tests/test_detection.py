"""Detection library: YOLOv5 decoding, NMS, letterbox geometry, labels, mAP and overlays,
checked against hand-made cases, against `inputs._letterbox` and against pycocotools itself."""

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import FIXTURES
from pytest_rknn.detection.check import (DetectionMetrics, DetectionSetup, _draw_worst, detect, detection_failures,
                                         map_thresholds, measure_maps, run_detection_check, slice_cosines)
from pytest_rknn.detection.geometry import letterbox_params, to_original
from pytest_rknn.detection.labels import load_ground_truth
from pytest_rknn.detection.metrics import agreement_map, coco_map, count_differences
from pytest_rknn.detection.nms import box_iou, non_max_suppression
from pytest_rknn.detection.check import setup as detection_setup
from pytest_rknn.detection.overlay import GAP, TITLE_HEIGHT, class_colour, draw_side_by_side, place_label
from pytest_rknn.errors import SpecError
from pytest_rknn.inputs import InputSet, prepare_inputs
from pytest_rknn.onnx_model import ModelInfo, TensorInfo, metadata_class_names, model_info, read_model_info
from pytest_rknn.spec import spec_from_dict
from pytest_rknn.detection.yolov5 import (DEFAULT_ANCHORS, DEFAULT_STRIDES, decode, detect_layout, num_classes,
                                          split_slices)
from pytest_rknn.inputs import _letterbox
from pytest_rknn.spec import YoloV5Check

# ---------------------------------------------------------------- YOLOv5 layouts and decoding


def zero_heads(classes=2, input_size=64):
    """Three sigmoid'd heads (1, 3*(5+C), H, W) for strides 8, 16, 32, all zero."""
    return [np.zeros((1, 3 * (5 + classes), input_size // s, input_size // s), dtype=np.float32)
            for s in DEFAULT_STRIDES]


def test_a_value_at_a_known_anchor_and_cell_decodes_to_the_yolov5_box():
    heads = zero_heads(classes=2)
    anchor, y, x = 1, 2, 3  # on the stride-16 head (4x4)
    heads[1][0, anchor * 7:(anchor + 1) * 7, y, x] = [0.75, 0.5, 0.5, 1.0, 0.9, 0.2, 0.7]
    rows = decode(heads)
    assert rows.shape == (3 * (8 * 8 + 4 * 4 + 2 * 2), 7)
    row = 3 * 8 * 8 + anchor * 4 * 4 + y * 4 + x  # heads by stride, then anchor, y, x
    cx = (0.75 * 2 - 0.5 + x) * 16  # 64
    cy = (0.5 * 2 - 0.5 + y) * 16  # 40
    w = (0.5 * 2) ** 2 * DEFAULT_ANCHORS[1][2 * anchor]  # 62
    h = (1.0 * 2) ** 2 * DEFAULT_ANCHORS[1][2 * anchor + 1]  # 4 * 45
    assert rows[row].tolist() == [cx, cy, w, h, np.float32(0.9), np.float32(0.2), np.float32(0.7)]
    assert rows[0].tolist() == [-4.0, -4.0, 0, 0, 0, 0, 0]  # stride 8, anchor 0, cell (0, 0), all zero
    assert np.count_nonzero(rows[:, 4]) == 1


def test_heads_in_any_order_decode_the_same():
    rng = np.random.default_rng(0)
    heads = [rng.uniform(0, 1, h.shape).astype(np.float32) for h in zero_heads(classes=3)]
    np.testing.assert_array_equal(decode([heads[2], heads[0], heads[1]]), decode(heads))


def test_heads_rows_follow_the_detect_layer_order():
    rng = np.random.default_rng(1)
    classes = 3
    heads = [rng.uniform(0, 1, h.shape).astype(np.float32) for h in zero_heads(classes=classes, input_size=96)]
    expected = []
    for head, anchors, stride in zip(heads, DEFAULT_ANCHORS, DEFAULT_STRIDES):
        for a in range(3):
            for y in range(head.shape[2]):
                for x in range(head.shape[3]):
                    s = head[0, a * (5 + classes):(a + 1) * (5 + classes), y, x].astype(np.float64)
                    expected.append([(s[0] * 2 - 0.5 + x) * stride, (s[1] * 2 - 0.5 + y) * stride,
                                     (s[2] * 2) ** 2 * anchors[2 * a], (s[3] * 2) ** 2 * anchors[2 * a + 1],
                                     *s[4:]])
    np.testing.assert_allclose(decode(heads), np.array(expected), rtol=1e-5, atol=1e-4)


def test_custom_anchors_and_strides_are_used():
    heads = [np.zeros((1, 18, 4, 4), np.float32), np.zeros((1, 18, 2, 2), np.float32),
             np.zeros((1, 18, 1, 1), np.float32)]
    heads[2][0, 0:6, 0, 0] = [0.5, 0.5, 0.5, 0.5, 1.0, 1.0]
    anchors = [[1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6], [7, 8, 9, 10, 11, 12]]
    rows = decode(heads, anchors=anchors, strides=[16, 32, 64])
    assert rows[-3].tolist() == [0.5 * 64, 0.5 * 64, 7.0, 8.0, 1.0, 1.0]


def test_heads_that_do_not_fit_the_strides_are_refused():
    heads = [np.zeros((1, 21, 8, 8), np.float32), np.zeros((1, 21, 4, 4), np.float32),
             np.zeros((1, 21, 3, 3), np.float32)]
    with pytest.raises(ValueError, match=r"head grids 8x8, 4x4, 3x3 do not fit strides \[8, 16, 32\]"):
        decode(heads)


def test_single_output_rows_are_returned_as_they_are():
    output = np.arange(2 * 7, dtype=np.float32).reshape(1, 2, 7)
    np.testing.assert_array_equal(decode([output]), output[0])
    np.testing.assert_array_equal(decode([output], layout="single"), output[0])


def test_layouts_and_class_counts_come_from_the_shapes():
    heads = [(1, 255, 80, 80), (1, 255, 40, 40), (1, 255, 20, 20)]
    assert detect_layout(heads) == "heads" and num_classes(heads, "heads") == 80
    assert detect_layout([(1, 25200, 85)]) == "single" and num_classes([(1, 25200, 85)], "single") == 80
    assert detect_layout([(1, 252, 7)]) == "single" and num_classes([(1, 252, 7)], "single") == 2


@pytest.mark.parametrize("shapes", [
    [(1, 10)],
    [(1, 25200, 85), (1, 25200, 85)],
    [(1, 256, 80, 80), (1, 256, 40, 40), (1, 256, 20, 20)],  # not 3 * (5 + C)
    [(1, 255, 80, 80), (1, 21, 40, 40), (1, 255, 20, 20)],  # class counts differ
    [(1, 255, 80, 80), (1, 255, 40, 40)],
    [(1, 25200, 5)],  # no class column
])
def test_other_shapes_are_not_a_yolov5_layout(shapes):
    with pytest.raises(ValueError, match=r"not a YOLOv5 output layout: got \d output\(s\) with shapes .*expected"):
        detect_layout(shapes)


def test_slices_are_the_box_objectness_and_class_parts_of_a_raw_output():
    head = np.random.default_rng(2).uniform(0, 1, (1, 3 * 7, 4, 4)).astype(np.float32)
    parts = split_slices(head, "heads")
    assert {k: v.shape for k, v in parts.items()} == {"boxes": (3, 4, 4, 4), "objectness": (3, 1, 4, 4),
                                                      "classes": (3, 2, 4, 4)}
    np.testing.assert_array_equal(parts["boxes"][2, :, 1, 3], head[0, 14:18, 1, 3])
    np.testing.assert_array_equal(parts["objectness"][2, 0], head[0, 18])
    np.testing.assert_array_equal(parts["classes"][1, :, 0, 2], head[0, 12:14, 0, 2])

    single = np.arange(3 * 8, dtype=np.float32).reshape(1, 3, 8)
    parts = split_slices(single, "single")
    np.testing.assert_array_equal(parts["boxes"], single[0, :, :4])
    np.testing.assert_array_equal(parts["objectness"], single[0, :, 4:5])
    np.testing.assert_array_equal(parts["classes"], single[0, :, 5:])
    with pytest.raises(ValueError, match=r"'single' output must be \(1, N, 5\+C\), got \(1, 21, 4, 4\)"):
        split_slices(head, "single")


# ---------------------------------------------------------------- NMS


def row(cx, cy, w, h, objectness, *class_scores):
    return [cx, cy, w, h, objectness, *class_scores]


def test_box_iou_of_hand_made_boxes():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 1, 0, 0], [0, 0, 0, 0]])


def test_an_overlapping_box_of_the_same_class_is_suppressed():
    pred = np.array([row(50, 50, 20, 20, 0.9, 1.0, 0.0), row(52, 50, 20, 20, 0.8, 1.0, 0.0)])
    np.testing.assert_allclose(non_max_suppression(pred), [[40, 40, 60, 60, 0.9, 0]])


def test_the_same_box_of_another_class_is_kept_unless_class_agnostic():
    pred = np.array([row(50, 50, 20, 20, 0.9, 1.0, 0.0), row(52, 50, 20, 20, 0.8, 0.0, 1.0)])
    np.testing.assert_allclose(non_max_suppression(pred), [[40, 40, 60, 60, 0.9, 0], [42, 40, 62, 60, 0.8, 1]])
    np.testing.assert_allclose(non_max_suppression(pred, class_agnostic=True), [[40, 40, 60, 60, 0.9, 0]])


def test_suppression_needs_an_iou_above_the_threshold():
    pred = np.array([row(5, 5, 10, 10, 0.9, 1.0), row(5, 2.5, 10, 5, 0.8, 1.0)])  # IoU exactly 0.5
    assert len(non_max_suppression(pred, iou_threshold=0.5)) == 2
    assert len(non_max_suppression(pred, iou_threshold=0.49)) == 1


def test_confidence_filters_objectness_first_then_objectness_times_class():
    pred = np.array([
        row(10, 10, 4, 4, 0.24, 1.5),  # objectness below 0.25: out, though 0.24 * 1.5 (int8 can overshoot 1) > 0.25
        row(30, 30, 4, 4, 0.5, 0.4),  # score 0.20: out
        row(50, 50, 4, 4, 0.5, 0.6),  # score 0.30: in
    ])
    np.testing.assert_allclose(non_max_suppression(pred), [[48, 48, 52, 52, 0.3, 0]])
    assert len(non_max_suppression(pred, conf_threshold=0.1)) == 3


def test_detections_are_best_first_and_capped():
    pred = np.array([row(20 * i + 5, 5, 10, 10, 0.3 + 0.05 * i, 0.0, 1.0) for i in range(10)])
    detections = non_max_suppression(pred, max_detections=3)
    np.testing.assert_allclose(detections[:, 4], [0.75, 0.70, 0.65])
    np.testing.assert_allclose(detections[:, 0], [180, 160, 140])
    assert (detections[:, 5] == 1).all()
    assert len(non_max_suppression(pred)) == 10


def test_empty_and_non_finite_inputs_give_no_detections():
    assert non_max_suppression(np.zeros((0, 7))).shape == (0, 6)
    assert non_max_suppression(np.array([row(5, 5, 2, 2, 0.1, 0.9)])).shape == (0, 6)
    broken = np.array([row(np.nan, 5, 2, 2, 0.9, 0.9), row(5, 5, 2, 2, np.inf, 0.9), row(5, 5, 2, 2, np.nan, 1.0)])
    assert non_max_suppression(broken).shape == (0, 6)
    mixed = np.vstack([broken, [row(50, 50, 10, 10, 0.9, 1.0)]])  # a broken row takes only itself out
    np.testing.assert_allclose(non_max_suppression(mixed), [[45, 45, 55, 55, 0.9, 0]])
    with pytest.raises(ValueError, match=r"\(N, 5\+C\).*got shape \(3, 5\)"):
        non_max_suppression(np.zeros((3, 5)))


def test_iou_of_boxes_off_the_origin_thin_and_sub_pixel():
    wide = [10, 20, 40, 30]  # 30 x 10, away from the origin
    others = [[20, 25, 60, 45],  # 40 x 20: overlaps 20 x 5 = 100 of a union 300 + 800 - 100
              [10, 20, 40, 30],  # itself
              [25, 10, 25.5, 50],  # half a pixel wide, 40 tall: crosses it, 0.5 x 10 = 5 of 300 + 20 - 5
              [40, 30, 50, 40]]  # touches its corner only
    np.testing.assert_allclose(box_iou([wide], others), [[0.1, 1.0, 5 / 315, 0.0]])
    speck = [3, 4, 3.5, 4.25]  # 0.5 x 0.25: smaller than a pixel, still the same box as itself
    np.testing.assert_allclose(box_iou([speck], [speck, [3.25, 4, 3.75, 4.25]]), [[1.0, 1 / 3]])


def test_iou_of_float16_boxes_larger_than_float16_areas_can_hold():
    """An fp16 model's boxes: 300 x 300 = 90000 is beyond float16's 65504."""
    a = np.array([[0, 0, 300, 300]], dtype=np.float16)
    b = np.array([[100, 0, 400, 300]], dtype=np.float16)
    np.testing.assert_allclose(box_iou(a, b), [[0.5]])
    np.testing.assert_allclose(box_iou(b, a), [[0.5]])


def test_boxes_without_area_have_an_iou_of_zero_with_everything():
    points = np.array([[x, 2 * x, x, 2 * x] for x in range(1, 41)], dtype=np.float64)  # no area, not at the origin
    lines = np.array([[x, 0, x + 5, 0] for x in range(1, 33)], dtype=np.float64)
    np.testing.assert_array_equal(box_iou(points, lines), np.zeros((40, 32)))
    np.testing.assert_array_equal(box_iou(points, points), np.zeros((40, 40)))


def test_float16_rows_of_boxes_larger_than_float16_areas_are_suppressed_all_the_same():
    pred = np.array([row(150, 150, 300, 300, 0.9, 1.0), row(160, 150, 300, 300, 0.8, 1.0)], dtype=np.float16)
    detections = non_max_suppression(pred)
    assert len(detections) == 1
    np.testing.assert_allclose(detections[0, :4], [0, 0, 300, 300])


def test_an_objectness_or_a_score_exactly_at_the_confidence_threshold_is_dropped():
    pred = np.array([
        row(10, 10, 4, 4, 0.25, 1.5),  # objectness at the line: out, though its score 0.375 is above it
        row(30, 30, 4, 4, 0.5, 0.5),  # score 0.25 at the line: out
        row(50, 50, 4, 4, 0.5, 0.5 + 1e-9),  # just above: in
    ])
    np.testing.assert_allclose(non_max_suppression(pred), [[48, 48, 52, 52, 0.25 + 0.5e-9, 0]])


def test_detections_of_equal_score_keep_the_order_of_their_rows():
    """So which of them max_detections keeps is the same on every run; 40 boxes apart from each other."""
    scores = [0.5] * 20 + [0.7] * 20
    pred = np.array([row(10 + 20 * i, 10, 10, 10, score, 1.0) for i, score in enumerate(scores)])
    detections = non_max_suppression(pred)
    np.testing.assert_array_equal(detections[:, 0], [5 + 20 * i for i in [*range(20, 40), *range(20)]])
    np.testing.assert_array_equal(non_max_suppression(pred, max_detections=3)[:, 0], [405, 425, 445])


def test_same_class_boxes_that_do_not_overlap_are_all_kept():
    pred = np.array([
        row(50, 50, 20, 20, 0.9, 1.0),  # 40..60 x 40..60
        row(140, 140, 20, 20, 0.8, 1.0),  # diagonally apart: apart on both axes
        row(50, 90, 20, 20, 0.8, 1.0),  # below it, the same columns
        row(200.5, 50, 1, 20, 0.7, 1.0), row(201.5, 50, 1, 20, 0.7, 1.0),  # one-pixel-wide bars side by side
        row(250, 200.5, 20, 1, 0.6, 1.0), row(250, 201.5, 20, 1, 0.6, 1.0),  # one-pixel-tall bars, one on the other
    ])
    assert len(non_max_suppression(pred)) == 7


def test_duplicates_of_a_box_thinner_than_a_pixel_are_suppressed():
    for w, h in [(0.5, 20), (20, 0.5)]:
        pred = np.array([row(50, 50, w, h, 0.9, 1.0), row(50, 50, w, h, 0.8, 1.0)])
        np.testing.assert_allclose(non_max_suppression(pred)[:, 4], [0.9])


def test_a_box_with_a_negative_side_neither_suppresses_nor_is_suppressed_by_an_unrelated_box():
    """A broken single-output conversion can give negative widths or heights; such a box stays a detection of its own."""
    for w, h in [(-30, 10), (10, -30)]:
        pred = np.array([row(50, 50, 10, 10, 0.9, 1.0), row(100, 100, w, h, 0.8, 1.0)])
        np.testing.assert_allclose(non_max_suppression(pred)[:, 4], [0.9, 0.8])
        np.testing.assert_allclose(non_max_suppression(pred[::-1])[:, 4], [0.9, 0.8])


def test_by_default_at_most_300_detections_are_kept_as_in_yolov5():
    pred = np.array([row(20 * x + 5, 20 * y + 5, 10, 10, 0.9, 1.0) for y in range(18) for x in range(18)])  # 324 apart
    assert len(non_max_suppression(pred)) == 300
    assert len(non_max_suppression(pred, max_detections=324)) == 324


# ---------------------------------------------------------------- letterbox geometry

SIZES = [((170, 300), (128, 128)), ((200, 90), (64, 64)), ((30, 40), (96, 96)), ((64, 5), (32, 32)),
         ((480, 640), (640, 640)), ((333, 500), (320, 416))]


def pasted_region(original_hw, input_hw):
    """Where `inputs._letterbox` puts the picture: (x, y, width, height), measured on its output."""
    image = Image.new("RGB", (original_hw[1], original_hw[0]), (255, 255, 255))
    ys, xs = np.nonzero(_letterbox(image, input_hw, 0)[..., 0])
    return xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()


@pytest.mark.parametrize("original_hw, input_hw", SIZES)
def test_letterbox_params_match_the_letterbox_inputs_makes(original_hw, input_hw):
    scale, pad_x, pad_y = letterbox_params(original_hw, input_hw)
    x, y, new_w, new_h = pasted_region(original_hw, input_hw)
    assert (pad_x, pad_y) == (x, y)
    assert abs(new_w - original_hw[1] * scale) <= 0.5 and abs(new_h - original_hw[0] * scale) <= 0.5
    box = np.array([[0.1 * original_hw[1], 0.2 * original_hw[0], 0.9 * original_hw[1], 0.7 * original_hw[0]]])
    in_input = box * ([new_w / original_hw[1], new_h / original_hw[0]] * 2) + [x, y, x, y]
    np.testing.assert_allclose(to_original(in_input, original_hw, input_hw), box, atol=1e-9)


@pytest.mark.parametrize("original_hw, input_hw", SIZES[:3] + SIZES[-2:])
def test_a_rectangle_found_in_the_letterboxed_image_maps_back_onto_the_original(tmp_path, original_hw, input_hw):
    height, width = original_hw
    rect = (round(0.3 * width), round(0.25 * height), round(0.75 * width), round(0.8 * height))
    image = Image.new("RGB", (width, height), (0, 0, 255))
    ImageDraw.Draw(image).rectangle((rect[0], rect[1], rect[2] - 1, rect[3] - 1), fill=(255, 0, 0))
    image.save(tmp_path / "rect.png")
    with Image.open(tmp_path / "rect.png") as reread:
        pixels = _letterbox(reread.convert("RGB"), input_hw, 114)
    ys, xs = np.nonzero((pixels[..., 0] > 128) & (pixels[..., 2] < 128))
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]])
    scale, _, _ = letterbox_params(original_hw, input_hw)
    # One pixel of the letterboxed image is 1/scale pixels of the original.
    np.testing.assert_allclose(to_original(found, original_hw, input_hw), [rect], atol=max(1.0, 1 / scale))


def test_stretch_resize_boxes_and_clipping():
    boxes = np.array([[16, 16, 32, 48, 0.8, 2]])
    np.testing.assert_allclose(to_original(boxes, (32, 128), (64, 64), letterboxed=False), [[32, 8, 64, 24, 0.8, 2]])
    # A 200x100 image letterboxed to 100x100 sits at y 25..75; boxes reaching into the padding are clipped.
    np.testing.assert_allclose(to_original([[-5, 10, 120, 90]], (100, 200), (100, 100)), [[0, 0, 200, 100]])
    assert to_original(np.zeros((0, 6)), (100, 200), (100, 100)).shape == (0, 6)


def test_boxes_of_wide_and_tall_images_map_back_each_along_its_own_axis():
    # 150 x 75 into 100 x 100: scale 2/3, pasted 100 x 50 at y 25; integer input pixels give fractional originals.
    assert letterbox_params((75, 150), (100, 100)) == (2 / 3, 0, 25)
    np.testing.assert_allclose(to_original([[11, 30, 51, 70]], (75, 150), (100, 100)), [[16.5, 7.5, 76.5, 67.5]])
    # 75 x 150 (tall): pasted 50 x 100 at x 25; a box running off the right is clipped to the width, 75.
    assert letterbox_params((150, 75), (100, 100)) == (2 / 3, 25, 0)
    np.testing.assert_allclose(to_original([[30, 11, 90, 51]], (150, 75), (100, 100)), [[7.5, 16.5, 75, 76.5]])
    # A square image in a wide input (80 x 160): scale 0.8, pasted 80 x 80 at x 40.
    assert letterbox_params((100, 100), (80, 160)) == (0.8, 40, 0)
    np.testing.assert_allclose(to_original([[40, 0, 120, 80]], (100, 100), (80, 160)), [[0, 0, 100, 100]])


@pytest.mark.parametrize("original_hw, pasted_at", [((1, 300), (0, 31)), ((300, 1), (31, 0))])
def test_an_image_a_pixel_thin_after_scaling_is_pasted_one_pixel_thick_and_maps_back_whole(original_hw, pasted_at):
    """300 x 1 into 63 x 63: the 0.21-pixel side is rounded up to one pixel, in the middle, as `inputs` pastes it."""
    assert pasted_region(original_hw, (63, 63)) == (*pasted_at, *((63, 1) if original_hw[0] == 1 else (1, 63)))
    assert letterbox_params(original_hw, (63, 63))[1:] == pasted_at
    x, y = pasted_at
    whole = [[x, y, 63 - x, 63 - y]]
    np.testing.assert_allclose(to_original(whole, original_hw, (63, 63)), [[0, 0, original_hw[1], original_hw[0]]])


def test_no_boxes_map_to_no_boxes_and_other_shapes_are_refused():
    assert to_original([], (100, 200), (100, 100)).shape == (0, 4)
    for boxes, shape in [([1, 2, 3, 4], "(4,)"), ([[1, 2, 3], [4, 5, 6]], "(2, 3)")]:
        with pytest.raises(ValueError) as raised:
            to_original(boxes, (100, 200), (100, 100))
        assert str(raised.value) == f"expected boxes (M, 4+) as x1, y1, x2, y2, ..., got shape {shape}"


# ---------------------------------------------------------------- labels

IMAGE_SIZES = {"a.png": (64, 48), "b.jpg": (40, 80), "c.png": (30, 30)}  # name: (width, height)
BOXES = {"a.png": [(4.0, 8.0, 36.0, 40.0, 0), (32.0, 0.0, 64.0, 16.0, 2)], "b.jpg": [(10.0, 20.0, 30.0, 70.0, 1)],
         "c.png": []}
CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "circle"}, {"id": 1, "name": "triangle"}]
CATEGORY_OF_CLASS = [1, 3, 7]  # sorted category ids
NAMES = ["triangle", "square", "circle"]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, size in IMAGE_SIZES.items():
        Image.new("RGB", size, (90, 90, 90)).save(folder / name)
    return [folder / name for name in IMAGE_SIZES]


def write_coco(path, boxes=BOXES, extra_annotations=()):
    images = [{"id": 10 + i, "file_name": f"val/{name}", "width": IMAGE_SIZES[name][0],
               "height": IMAGE_SIZES[name][1]} for i, name in enumerate(IMAGE_SIZES)]
    annotations = [{"id": len(images) * 100 + k, "image_id": 10 + i, "category_id": CATEGORY_OF_CLASS[c],
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0}
                   for i, name in enumerate(IMAGE_SIZES) for k, (x1, y1, x2, y2, c) in enumerate(boxes[name])]
    path.write_text(json.dumps({"images": images, "annotations": annotations + list(extra_annotations),
                                "categories": CATEGORIES}))
    return path


def write_yolo(folder, boxes=BOXES):
    folder.mkdir()
    (folder / "classes.txt").write_text("\n".join(NAMES) + "\n")
    for name, rows in boxes.items():
        width, height = IMAGE_SIZES[name]
        lines = [f"{c} {(x1 + x2) / 2 / width:.9f} {(y1 + y2) / 2 / height:.9f} {(x2 - x1) / width:.9f} "
                 f"{(y2 - y1) / height:.9f}" for x1, y1, x2, y2, c in rows]
        (folder / f"{name.rsplit('.', 1)[0]}.txt").write_text("\n".join(lines) + "\n" if lines else "")
    return folder


def test_coco_json_and_yolo_txt_of_the_same_boxes_load_the_same(tmp_path, images):
    crowd = {"id": 999, "image_id": 11, "category_id": 7, "bbox": [0, 0, 40, 80], "iscrowd": 1}
    coco = load_ground_truth(write_coco(tmp_path / "labels.json", extra_annotations=[crowd]), images)
    yolo = load_ground_truth(write_yolo(tmp_path / "labels"), images)
    assert coco.class_names == NAMES == yolo.class_names
    assert list(coco.boxes) == list(yolo.boxes) == list(IMAGE_SIZES)
    for name, expected in BOXES.items():
        assert coco.boxes[name] == expected  # crowd regions are left out
        assert [c for *_, c in yolo.boxes[name]] == [c for *_, c in expected]
        np.testing.assert_allclose([b[:4] for b in yolo.boxes[name]], [b[:4] for b in expected] or np.zeros((0,)),
                                   atol=1e-6)


def test_class_names_from_classes_txt_else_data_yaml_and_a_coco_json_without_names_has_none(tmp_path, images):
    folder = write_yolo(tmp_path / "labels")
    (folder / "data.yaml").write_text("path: .\nnames: {0: triangle, 1: square, 2: circle, 3: star}\n")
    assert load_ground_truth(folder, images).class_names == NAMES  # classes.txt first
    (folder / "classes.txt").unlink()
    assert load_ground_truth(folder, images).class_names == NAMES + ["star"]  # ultralytics' mapping
    (folder / "data.yaml").write_text("names: [triangle, square]\n")  # a list; and it bounds the class ids
    with pytest.raises(ValueError, match=r"class 2 but data.yaml names only 2 classes"):
        load_ground_truth(folder, images)
    (folder / "data.yaml").write_text("nc: 3\n")
    with pytest.raises(ValueError, match=r"data.yaml: needs `names`"):
        load_ground_truth(folder, images)
    unnamed = json.loads(write_coco(tmp_path / "labels.json").read_text())
    for category in unnamed["categories"]:
        del category["name"]
    (tmp_path / "unnamed.json").write_text(json.dumps(unnamed))
    assert load_ground_truth(tmp_path / "unnamed.json", images).class_names is None  # the model's metadata may


def test_class_names_from_an_ultralytics_export_metadata_are_parsed_never_run(tmp_path):
    assert metadata_class_names({"names": "{0: 'person', 1: 'bicycle', 2: 'car'}"}) == ("person", "bicycle", "car")
    assert metadata_class_names({"names": "['a', 'b']"}) == ("a", "b")
    assert metadata_class_names({"names": "{0: 'a', 2: 'c'}"}) == ("a", "1", "c")  # a gap keeps its number
    marker = tmp_path / "ran"
    for text in (f"__import__('pathlib').Path({str(marker)!r}).touch()", "{0: 'a'", "42", "{}", "{'a': 'b'}"):
        assert metadata_class_names({"names": text}) is None, text
    assert not marker.exists()
    assert metadata_class_names({"stride": "32"}) is None

    import onnx

    model = onnx.load(str(FIXTURES / "yolo" / "yolov5_single.onnx"))
    onnx.helper.set_model_props(model, {"names": "{0: 'circle', 1: 'square', 2: 'triangle', 3: 'cross'}"})
    onnx.save(model, str(tmp_path / "named.onnx"))
    names = ("circle", "square", "triangle", "cross")
    assert read_model_info(tmp_path / "named.onnx").class_names == names
    kept = tmp_path / "kept"
    assert model_info(tmp_path / "named.onnx", kept).class_names == names
    assert model_info(tmp_path / "named.onnx", kept).class_names == names  # from the kept record
    assert read_model_info(FIXTURES / "yolo" / "yolov5_single.onnx").class_names is None


def test_overlays_name_the_classes_from_the_labels_else_the_model_metadata_else_the_number(tmp_path, monkeypatch):
    import onnx

    model = onnx.load(str(FIXTURES / "yolo" / "yolov5_single.onnx"))
    onnx.helper.set_model_props(model, {"names": "{0: 'ring', 1: 'box', 2: 'wedge', 3: 'plus'}"})
    onnx.save(model, str(tmp_path / "named.onnx"))
    images = str(FIXTURES / "yolo" / "val" / "images" / "val_00[01].jpg")

    def class_names(model_file, labels):
        yolov5 = {"labels": labels} if labels else {}
        spec = spec_from_dict({"model": str(model_file), "inputs": {"images": {"images": images, "letterbox": 160}},
                               "checks": {"yolov5": yolov5}}, path=tmp_path / "s.rknn.yaml", base_dir=tmp_path)
        info = read_model_info(spec.model_path)
        inputs = prepare_inputs(spec, info)
        return detection_setup(spec, info, inputs, [tuple(t.shape) for t in info.outputs]).class_names

    labels = str(FIXTURES / "yolo" / "val" / "labels.json")
    assert class_names(tmp_path / "named.onnx", labels) == ["circle", "square", "triangle", "cross"]  # the labels'
    assert class_names(tmp_path / "named.onnx", None) == ["ring", "box", "wedge", "plus"]  # the model's
    assert class_names(FIXTURES / "yolo" / "yolov5_single.onnx", None) is None

    texts = []
    original = ImageDraw.ImageDraw.text
    monkeypatch.setattr(ImageDraw.ImageDraw, "text", lambda self, xy, text, *a, **k: (texts.append(text),
                                                                                      original(self, xy, text, *a, **k)))
    Image.new("RGB", (100, 80), (90, 90, 90)).save(tmp_path / "photo.png")
    boxes = np.array([[10, 30, 50, 70, 0.91, 1], [60, 30, 90, 70, 0.4, 7]])
    draw_side_by_side(tmp_path / "photo.png", boxes, boxes[:1], tmp_path / "out.png", class_names=["a", "bowl"])
    assert texts == ["onnxruntime", "bowl 0.91", "7 0.40", "RKNN", "bowl 0.91"]  # a class it does not name: its number


def test_labels_of_crowded_boxes_do_not_cover_each_other(tmp_path):
    panel = (0, 0, 200, 100)
    first = place_label((20, 40, 80, 90), (30, 12), panel, [])
    assert first == (20, 28, 50, 40)  # above its box
    second = place_label((22, 42, 80, 90), (30, 12), panel, [first])
    assert second == (22, 42, 52, 54)  # above would cover the first: inside the top of its box
    third = place_label((21, 41, 80, 60), (30, 12), panel, [first, second])
    assert third == (21, 61, 51, 73)  # below its box
    assert place_label((0, 0, 50, 50), (30, 12), panel, [])[1] == 0  # at the top edge: kept in the panel
    assert place_label((190, 20, 199, 30), (30, 12), panel, [])[0] == 170  # at the right edge too

    # Drawn: five boxes of one place get five labels apart (where the old drawing stacked them at one spot).
    Image.new("RGB", (120, 120), (90, 90, 90)).save(tmp_path / "photo.png")
    boxes = np.array([[30, 40 + k, 100, 110, 0.9 - 0.1 * k, k] for k in range(4)])
    spots = []
    import pytest_rknn.detection.overlay as overlay

    original = overlay.place_label

    def spy(*args):
        spots.append(original(*args))
        return spots[-1]

    overlay.place_label = spy
    try:
        draw_side_by_side(tmp_path / "photo.png", boxes, None, tmp_path / "out.png")
    finally:
        overlay.place_label = original
    assert len(spots) == 4 and all(overlay._overlap(a, b) == 0 for i, a in enumerate(spots) for b in spots[i + 1:])


def test_a_yolo_image_without_a_label_file_has_no_objects_but_a_folder_without_any_is_an_error(tmp_path, images):
    folder = write_yolo(tmp_path / "labels")
    (folder / "c.txt").unlink()
    assert load_ground_truth(folder, images).boxes["c.png"] == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no label file for any of the 3 images \(expected e.g. a.txt\)"):
        load_ground_truth(tmp_path / "empty", images)


def test_coco_without_one_of_the_images_names_the_file_and_the_image(tmp_path, images):
    Image.new("RGB", (8, 8)).save(images[0].parent / "d.png")
    path = write_coco(tmp_path / "labels.json")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: has no image with file name 'd.png'"):
        load_ground_truth(path, images + [images[0].parent / "d.png"])


def test_coco_annotation_with_an_unknown_category_is_named(tmp_path, images):
    stray = {"id": 77, "image_id": 10, "category_id": 5, "bbox": [0, 0, 1, 1]}
    with pytest.raises(ValueError, match=r"labels.json: annotation 77: category_id 5 is not in 'categories'"):
        load_ground_truth(write_coco(tmp_path / "labels.json", extra_annotations=[stray]), images)


@pytest.mark.parametrize("bad_line, message", [
    ("1 0.5 0.5 0.2", r"line 2: expected 5 values 'class cx cy w h', got 4: '1 0.5 0.5 0.2'"),
    ("1 0.5 0.5 0.2 abc", r"line 2: not numbers"),
    ("1 0.5 0.5 1.2 0.3", r"line 2: cx cy w h must be normalised to 0..1 with w, h > 0, got 0.5 0.5 1.2 0.3"),
    ("1.5 0.5 0.5 0.2 0.3", r"line 2: class must be a whole number >= 0, got '1.5'"),
    ("3 0.5 0.5 0.2 0.3", r"line 2: class 3 but classes.txt names only 3 classes"),
])
def test_a_bad_yolo_line_is_named_with_its_file_and_line_number(tmp_path, images, bad_line, message):
    folder = write_yolo(tmp_path / "labels")
    (folder / "b.txt").write_text("1 0.5 0.5 0.5 0.625\n" + bad_line + "\n")
    with pytest.raises(ValueError, match=re.escape(str(folder / "b.txt")) + ": " + message):
        load_ground_truth(folder, images)


def test_a_label_of_a_class_the_model_does_not_have_names_the_file_the_line_and_the_class_count(tmp_path, images):
    """a.png's second box is class 2; a model with two classes has only 0 and 1."""
    folder = write_yolo(tmp_path / "labels")
    (folder / "classes.txt").unlink()  # without classes.txt nothing else bounds a YOLO class id
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'a.txt'}: line 2: class 2, but the model has 2 "
                                                   f"classes (0..1)")):
        load_ground_truth(folder, images, num_classes=2)
    with pytest.raises(ValueError, match=r"labels.json: annotation 301: category_id 7 is class 2 \(categories are "
                                         r"numbered in id order\), but the model has 2 classes \(0..1\)"):
        load_ground_truth(write_coco(tmp_path / "labels.json"), images, num_classes=2)
    assert load_ground_truth(folder, images, num_classes=3).boxes["a.png"][1][4] == 2


def test_label_sources_that_cannot_be_matched(tmp_path, images):
    with pytest.raises(ValueError, match=r"labels not found: .*nowhere.json"):
        load_ground_truth(tmp_path / "nowhere.json", images)
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (8, 8)).save(other / "a.png")
    with pytest.raises(ValueError, match=r"these names occur more than once: a.png"):
        load_ground_truth(write_coco(tmp_path / "labels.json"), images + [other / "a.png"])


# ---------------------------------------------------------------- mAP against pycocotools


def random_case(seed, num_images=6, num_classes=3):
    """Ground truth and imperfect detections: jittered, some missed, some with a wrong class, plus false positives."""
    rng = np.random.default_rng(seed)
    truth, detections = {}, {}
    for i in range(num_images):
        name = f"img_{i}.png"
        boxes = []
        for _ in range(rng.integers(0, 6) if i else 0):  # img_0 has no objects
            x1, y1 = rng.uniform(0, 150, 2)
            w, h = rng.uniform(8, 50, 2)
            boxes.append((x1, y1, x1 + w, y1 + h, int(rng.integers(num_classes))))
        rows = []
        for x1, y1, x2, y2, c in boxes:
            if rng.random() < 0.8:
                jitter = rng.normal(0, 3, 4)
                label = c if rng.random() < 0.85 else (c + 1) % num_classes
                rows.append([x1 + jitter[0], y1 + jitter[1], x2 + jitter[2], y2 + jitter[3], rng.random(), label])
        for _ in range(rng.integers(0, 3)):
            x1, y1 = rng.uniform(0, 150, 2)
            rows.append([x1, y1, x1 + rng.uniform(5, 40), y1 + rng.uniform(5, 40), rng.random(),
                         rng.integers(num_classes)])
        truth[name] = boxes
        detections[name] = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return truth, detections


def pycocotools_by_hand(tmp_path, detections, truth, num_classes):
    """COCOeval on json files, with image, category and annotation ids of its own."""
    names = list(truth)
    images = [{"id": 500 + 3 * i, "file_name": name, "width": 200, "height": 200} for i, name in enumerate(names)]
    image_id = {name: 500 + 3 * i for i, name in enumerate(names)}
    categories = [{"id": 10 * c + 7, "name": f"class{c}"} for c in range(num_classes)]
    annotations = [{"id": 1000 + len(names) * k + i, "image_id": image_id[name], "category_id": 10 * c + 7,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
                   for i, name in enumerate(names) for k, (x1, y1, x2, y2, c) in enumerate(truth[name])]
    results = [{"image_id": image_id[name], "category_id": 10 * int(c) + 7, "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": s} for name in names for x1, y1, x2, y2, s, c in detections[name].tolist()]
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                  "categories": categories}))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    gt = COCO(str(tmp_path / "gt.json"))
    evaluation = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return {"map50": evaluation.stats[1], "map": evaluation.stats[0]}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_coco_map_is_what_pycocotools_reports(tmp_path, seed):
    truth, detections = random_case(seed)
    ours = coco_map(detections, truth, 3)
    assert 0.0 < ours["map"] < ours["map50"] < 1.0  # an informative case, not a corner
    expected = pycocotools_by_hand(tmp_path, detections, truth, 3)
    assert ours == pytest.approx(expected, abs=1e-12)


def test_perfect_detections_give_one_and_none_give_zero():
    truth, _ = random_case(0)
    perfect = {name: np.array([[*b[:4], 1.0, b[4]] for b in boxes]).reshape(-1, 6) for name, boxes in truth.items()}
    assert coco_map(perfect, truth, 3) == {"map50": 1.0, "map": 1.0}
    assert coco_map({}, truth, 3) == {"map50": 0.0, "map": 0.0}
    assert coco_map({name: np.zeros((0, 6)) for name in truth}, truth, 3) == {"map50": 0.0, "map": 0.0}


def test_detections_on_an_image_without_ground_truth_are_false_positives(tmp_path):
    truth, _ = random_case(0)
    perfect = {name: np.array([[*b[:4], 0.5, b[4]] for b in boxes]).reshape(-1, 6) for name, boxes in truth.items()}
    assert truth["img_0.png"] == []
    present_class = next(boxes[0][4] for boxes in truth.values() if boxes)
    perfect["img_0.png"] = np.array([[10, 10, 50, 50, 0.9, present_class]])
    ours = coco_map(perfect, truth, 3)
    assert ours["map50"] < 1.0
    assert ours == pytest.approx(pycocotools_by_hand(tmp_path, perfect, truth, 3), abs=1e-12)


def test_map_without_any_ground_truth_is_undefined_and_bad_classes_are_refused():
    result = coco_map({"a.png": np.array([[0, 0, 5, 5, 0.9, 0]])}, {"a.png": []}, 2)
    assert math.isnan(result["map50"]) and math.isnan(result["map"])
    with pytest.raises(ValueError, match=r"detections of a.png: class 2.0 is not one of 0..1"):
        coco_map({"a.png": np.array([[0, 0, 5, 5, 0.9, 2]])}, {"a.png": [(0, 0, 5, 5, 0)]}, 2)


def test_agreement_map_of_a_set_with_itself_is_one_and_with_a_worse_set_less():
    _, detections = random_case(1)
    assert agreement_map(detections, detections, 3) == {"map50": 1.0, "map": 1.0}
    shifted = {name: rows + [6, 6, 6, 6, 0, 0] for name, rows in detections.items()}
    worse = agreement_map(shifted, detections, 3)
    assert worse["map"] < worse["map50"] <= 1.0 and worse["map"] < 0.9
    assert agreement_map({}, detections, 3) == {"map50": 0.0, "map": 0.0}


def test_agreement_when_the_reference_finds_nothing():
    nothing = {"a.png": np.zeros((0, 6))}
    assert agreement_map(nothing, nothing, 2) == {"map50": 1.0, "map": 1.0}
    assert agreement_map({"a.png": np.array([[0, 0, 5, 5, 0.9, 0]])}, nothing, 2) == {"map50": 0.0, "map": 0.0}


def test_count_differences_lists_both_counts_per_image():
    box = [0, 0, 5, 5, 0.9, 0]
    reference = {"a.png": np.array([box, box]), "b.png": np.zeros((0, 6)), "c.png": np.array([box])}
    candidate = {"b.png": np.array([box] * 4), "c.png": np.array([box]), "d.png": np.array([box])}
    assert count_differences(candidate, reference) == [("a.png", 0, 2), ("b.png", 4, 0), ("c.png", 1, 1),
                                                       ("d.png", 1, 0)]


def test_detections_on_an_image_the_labels_do_not_list_are_false_positives():
    truth = {"a.png": [(0, 0, 10, 10, 0)]}
    detections = {"a.png": np.array([[0, 0, 10, 10, 0.5, 0]]), "b.png": np.array([[0, 0, 10, 10, 0.9, 0]])}
    assert coco_map(detections, truth, 1) == pytest.approx({"map50": 0.5, "map": 0.5})  # the best one is on b.png
    assert coco_map({"a.png": detections["a.png"]}, truth, 1) == pytest.approx({"map50": 1.0, "map": 1.0})


def test_a_ground_truth_box_of_zero_height_is_an_object_nobody_finds(tmp_path):
    truth = {"a.png": [(0, 0, 10, 10, 0), (20, 20, 30, 20, 0)]}  # the second is a line
    detections = {"a.png": np.array([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 20, 0.8, 0]])}
    ours = coco_map(detections, truth, 1)
    assert ours == pytest.approx({"map50": 51 / 101, "map": 51 / 101})  # recall 0.5 at precision 1, of 101 points
    assert ours == pytest.approx(pycocotools_by_hand(tmp_path, detections, truth, 1), abs=1e-12)


def test_malformed_detections_and_labels_are_named_with_their_image():
    truth = {"a.png": [(0, 0, 10, 10, 0)]}
    cases = [
        (lambda: coco_map({"a.png": np.zeros((1, 5))}, truth, 2), "detections of a.png must be (M, 6) x1, y1, x2, y2, "
                                                                  "score, class; got shape (1, 5)"),
        (lambda: coco_map({"a.png": np.array([0.9])}, truth, 2), "detections of a.png must be (M, 6) x1, y1, x2, "
                                                                 "y2, score, class; got shape (1,)"),
        (lambda: agreement_map({}, {"ref.png": np.zeros((2, 7))}, 2), "detections of ref.png must be (M, 6) x1, y1, "
                                                                      "x2, y2, score, class; got shape (2, 7)"),
        (lambda: count_differences({"b.png": np.zeros((1, 5))}, {}), "detections of b.png must be (M, 6) x1, y1, x2, "
                                                                     "y2, score, class; got shape (1, 5)"),
        (lambda: coco_map({}, {"a.png": [(0, 0, 10, 10, 3)]}, 2), "ground truth of a.png: class 3 is not one of 0..1"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as raised:
            call()
        assert str(raised.value) == message


def test_count_differences_when_a_side_has_nothing():
    box = [0, 0, 5, 5, 0.9, 0]
    assert count_differences({}, {}) == []
    assert count_differences({"a.png": None, "b.png": [], "c.png": np.zeros(0)}, {"a.png": np.array([box])}) == [
        ("a.png", 0, 1), ("b.png", 0, 0), ("c.png", 0, 0)]
    assert count_differences({"a.png": np.array([box] * 3)}, {"a.png": None}) == [("a.png", 3, 0)]


# ---------------------------------------------------------------- overlay


def test_overlay_shows_reference_left_and_candidate_right(tmp_path):
    width, height, grey = 120, 80, (128, 128, 128)
    Image.new("RGB", (width, height), grey).save(tmp_path / "photo.png")
    reference = np.array([[10, 20, 60, 70, 0.9, 0]])
    candidate = np.array([[30, 10, 100, 60, 0.8, 3]])
    out = draw_side_by_side(tmp_path / "photo.png", reference, candidate, tmp_path / "out" / "photo.png",
                            class_names=["a", "b", "c", "d"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["photo.png"]  # no temporary file left behind
    with Image.open(out) as picture:
        assert picture.format == "PNG"
        pixels = np.asarray(picture.convert("RGB"))
    assert pixels.shape == (height + TITLE_HEIGHT, 2 * width + GAP, 3)
    right = width + GAP
    assert tuple(pixels[TITLE_HEIGHT + 70, 35]) == class_colour(0)  # bottom edge of the reference box
    assert tuple(pixels[TITLE_HEIGHT + 45, 10]) == class_colour(0)  # its left edge
    assert tuple(pixels[TITLE_HEIGHT + 60, right + 65]) == class_colour(3)  # bottom edge of the candidate box
    assert tuple(pixels[TITLE_HEIGHT + 35, right + 100]) == class_colour(3)  # its right edge
    assert tuple(pixels[TITLE_HEIGHT + 60, 65]) == grey  # no candidate box on the left
    assert tuple(pixels[TITLE_HEIGHT + 70, right + 35]) == grey  # no reference box on the right
    assert class_colour(0) != class_colour(3)
    assert (pixels[:TITLE_HEIGHT, :width] < 100).any() and (pixels[:TITLE_HEIGHT, right:] < 100).any()  # titles


def test_overlay_with_no_boxes_is_the_image_twice(tmp_path):
    Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "photo.png")
    out = draw_side_by_side(tmp_path / "photo.png", np.zeros((0, 6)), None, tmp_path / "out.png")
    pixels = np.asarray(Image.open(out).convert("RGB"))
    np.testing.assert_array_equal(pixels[TITLE_HEIGHT:, :40], pixels[TITLE_HEIGHT:, 40 + GAP:])
    assert (pixels[TITLE_HEIGHT:, :40] == (10, 200, 30)).all()


LABELLED = dict(layout="heads", counts=[("a.jpg", 3, 3)], ref_map50=0.75, agreement_map50=1.0)
UNLABELLED = dict(layout="heads", counts=[("a.jpg", 3, 3)])


@pytest.mark.parametrize("gate, figures, at_the_line, beyond", [
    ({"count_tolerance": 1}, UNLABELLED, {"counts": [("a.jpg", 4, 3), ("b.jpg", 2, 3)], "agreement_map50": 0.9},
     {"counts": [("a.jpg", 4, 3), ("b.jpg", 1, 3)], "agreement_map50": 0.9}),
    ({"count_tolerance": 0}, UNLABELLED, {"counts": [("a.jpg", 3, 3)], "agreement_map50": 0.9},
     {"counts": [("a.jpg", 4, 3)], "agreement_map50": 0.9}),
    ({"map50_ratio": 0.5}, LABELLED, {"map50": 0.375}, {"map50": 0.3749}),  # 0.5 x onnxruntime's 0.75
    ({"map50_ratio": 0.75}, UNLABELLED, {"agreement_map50": 0.75}, {"agreement_map50": 0.7499}),  # x 1.0
    ({"max_map50_drop": 0.25}, LABELLED, {"map50": 0.5}, {"map50": 0.4999}),  # 0.75 - 0.5
    ({"max_map50_drop": 0.25}, UNLABELLED, {"agreement_map50": 0.75}, {"agreement_map50": 0.7499}),  # 1.0 - 0.75
    ({"min_agreement_map50": 0.5}, LABELLED, {"map50": 0.75, "agreement_map50": 0.5},
     {"map50": 0.75, "agreement_map50": 0.4999}),
])
def test_each_detection_gate_passes_at_its_line_and_fails_just_beyond(gate, figures, at_the_line, beyond):
    check = YoloV5Check(**{"count_tolerance": None, **gate})
    assert detection_failures(check, DetectionMetrics(**{**figures, **at_the_line})) == []
    [line] = detection_failures(check, DetectionMetrics(**{**figures, **beyond}))
    assert line.startswith("yolov5: ")


def test_a_stored_map_without_onnxruntimes_fails_the_map_gates_instead_of_passing():
    figures = DetectionMetrics(layout="heads", counts=[], map50=0.9, agreement_map50=1.0)  # ref_map50 lost
    lines = detection_failures(YoloV5Check(map50_ratio=0.1, max_map50_drop=1.0), figures)
    assert len(lines) == 2 and lines[0].endswith("mAP@0.5 0.9000 vs onnxruntime unknown (ground truth)")
    nan = DetectionMetrics(layout="heads", counts=[])  # no agreement figure: NaN never passes
    assert len(detection_failures(YoloV5Check(min_agreement_map50=0.0, map50_ratio=1e-9), nan)) == 2


def test_the_count_gate_names_five_images_and_counts_the_rest():
    counts = [(f"{i}.jpg", 0, 2) for i in range(7)] + [("ok.jpg", 2, 2)]
    [line] = detection_failures(YoloV5Check(count_tolerance=1), DetectionMetrics("heads", counts, agreement_map50=1.0))
    assert line.startswith("yolov5: detection counts differ by more than 1 on 7 of 8 images (RKNN vs onnxruntime: "
                           "0.jpg: 0 vs 2, 1.jpg: 0 vs 2, 2.jpg: 0 vs 2, 3.jpg: 0 vs 2, 4.jpg: 0 vs 2, and 2 more); "
                           "agreement mAP@0.5 with onnxruntime 1.0000")


def test_stored_figures_are_judged_by_the_gates_of_the_check_given():
    """Gating is apart from measuring: the same figures pass one check and fail a stricter one, each
    gate with its own line; min_agreement_map50 is a gate too."""
    figures = DetectionMetrics(layout="heads", counts=[("a.jpg", 3, 3), ("b.jpg", 1, 4)], agreement_map50=0.62,
                               agreement_map=0.4)
    assert detection_failures(YoloV5Check(count_tolerance=3), figures) == []
    strict = detection_failures(YoloV5Check(count_tolerance=1, min_agreement_map50=0.8, map50_ratio=0.7), figures)
    assert len(strict) == 3
    assert strict[0].startswith("yolov5: detection counts differ by more than 1 on 1 of 2 images (RKNN vs "
                                "onnxruntime: b.jpg: 1 vs 4)")
    assert strict[1].startswith("yolov5: agreement mAP@0.5 with onnxruntime 0.6200 < 0.7 x onnxruntime's 1.0000")
    assert strict[2].startswith("yolov5: agreement mAP@0.5 with onnxruntime 0.6200 < min_agreement_map50 0.8")
    labelled = DetectionMetrics(layout="heads", counts=[], map50=0.5, ref_map50=0.6, agreement_map50=0.9)
    assert detection_failures(YoloV5Check(max_map50_drop=0.05), labelled)[0].startswith(
        "yolov5: mAP@0.5 dropped by 0.1000 (0.6000 -> 0.5000) > max 0.05")



# ---------------------------------------------------------------- the yolov5 check: setup, detect, slices, mAPs, overlays

VAL = FIXTURES / "yolo" / "val"
YOLO_IMAGES = ["val_000.jpg", "val_002.jpg", "val_003.jpg"]  # 158 x 175 (tall), 193 x 133 and 164 x 126 (wide)


@pytest.fixture(scope="module")
def fixture_yolo_outputs():
    """onnxruntime's outputs of the fixture's three-head YOLOv5 on three val images, letterboxed to 160 as its README
    says, and the images' labels."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(FIXTURES / "yolo" / "yolov5_heads.onnx"),
                                           providers=["CPUExecutionProvider"])
    paths = [str(VAL / "images" / name) for name in YOLO_IMAGES]
    outputs = []
    for path in paths:
        with Image.open(path) as image:
            pixels = _letterbox(image.convert("RGB"), (160, 160), 114)
        outputs.append(session.run(None, {"images": (pixels.astype(np.float32) / 255).transpose(2, 0, 1)[None]}))
    ground_truth, class_names = load_ground_truth(VAL / "labels.json", paths, 4)
    return paths, outputs, ground_truth, class_names


def yolo_setup(paths, layout="single", input_hw=(100, 100), letterboxed=True, ground_truth=None, num_classes=2,
               class_names=None, **check):
    return DetectionSetup(YoloV5Check(**check), layout, input_hw, letterboxed, [str(p) for p in paths], ground_truth,
                          class_names, num_classes)


def grey_images(folder, **sizes):
    """name=(width, height) -> plain PNG files `name.png`."""
    paths = []
    for name, size in sizes.items():
        Image.new("RGB", size, (90, 90, 90)).save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths


def fake_model(input_shape=(1, 3, 160, 160), inputs=1, class_names=None):
    tensors = [TensorInfo(f"in{k}", "float32", tuple(input_shape)) for k in range(inputs)]
    return ModelInfo(FIXTURES / "yolo" / "yolov5_single.onnx", "", tensors, [], class_names=class_names)


def yolo_spec(tmp_path, image_input=None, **yolov5):
    """A spec of one image input (its images are not read: the setup takes the InputSet's paths)."""
    image_input = image_input or {"images": "*.jpg", "letterbox": 160}
    return spec_from_dict({"model": str(FIXTURES / "yolo" / "yolov5_single.onnx"), "inputs": {"in0": image_input},
                           "checks": {"yolov5": yolov5}}, path=tmp_path / "s.rknn.yaml", base_dir=tmp_path)


IMAGE_PATHS = InputSet([], [], [], [], [str(VAL / "images" / name) for name in ("val_000.jpg", "val_002.jpg")])
SINGLE_SHAPES = [(1, 1575, 9)]


def test_setup_takes_the_input_size_from_the_letterbox_else_the_resize_else_the_model(tmp_path):
    model = fake_model((1, 3, 96, 160))
    letterboxed = detection_setup(yolo_spec(tmp_path, {"images": "*.jpg", "letterbox": [64, 128]}), model,
                                  IMAGE_PATHS, SINGLE_SHAPES)
    assert (letterboxed.input_hw, letterboxed.letterboxed) == ((64, 128), True)
    stretched = detection_setup(yolo_spec(tmp_path, {"images": "*.jpg", "size": [80, 120]}), model, IMAGE_PATHS,
                                SINGLE_SHAPES)
    assert (stretched.input_hw, stretched.letterboxed) == ((80, 120), False)
    as_is = detection_setup(yolo_spec(tmp_path, {"images": "*.jpg"}), model, IMAGE_PATHS, SINGLE_SHAPES)
    assert (as_is.input_hw, as_is.letterboxed) == ((96, 160), False)  # the model's NCHW height and width
    assert (as_is.layout, as_is.num_classes, as_is.image_paths) == ("single", 4, IMAGE_PATHS.image_paths)
    assert (as_is.ground_truth, as_is.class_names, as_is.reference_map) == (None, None, None)
    assert as_is.check == YoloV5Check()


def test_setup_reads_the_labels_and_takes_class_names_from_them_else_from_the_model(tmp_path):
    labelled = detection_setup(yolo_spec(tmp_path, labels=str(VAL / "labels.json")), fake_model(class_names=("a",)),
                               IMAGE_PATHS, SINGLE_SHAPES)
    assert labelled.class_names == ["circle", "square", "triangle", "cross"]
    assert labelled.ground_truth["val_002.jpg"] == [(148.0, 64.0, 163.0, 78.0, 3), (82.0, 93.0, 113.0, 124.0, 3),
                                                    (172.0, 88.0, 192.0, 108.0, 0)]
    assert list(labelled.ground_truth) == ["val_000.jpg", "val_002.jpg"]
    named = detection_setup(yolo_spec(tmp_path), fake_model(class_names=("ring", "box")), IMAGE_PATHS, SINGLE_SHAPES)
    assert named.class_names == ["ring", "box"]
    assert detection_setup(yolo_spec(tmp_path), fake_model(class_names=()), IMAGE_PATHS, SINGLE_SHAPES).class_names \
        is None
    without_metadata = SimpleNamespace(inputs=fake_model().inputs)  # a model description that has no class names
    assert detection_setup(yolo_spec(tmp_path), without_metadata, IMAGE_PATHS, SINGLE_SHAPES).class_names is None


def test_an_explicit_layout_is_taken_as_given_and_auto_reads_the_shapes(tmp_path):
    heads = [(1, 27, 20, 20), (1, 27, 10, 10), (1, 27, 5, 5)]
    assert detection_setup(yolo_spec(tmp_path), fake_model(), IMAGE_PATHS, heads).layout == "heads"
    # Given, it is not checked against the shapes here: decoding says what does not fit, rather than read another.
    given = detection_setup(yolo_spec(tmp_path, layout="heads"), fake_model(), IMAGE_PATHS, SINGLE_SHAPES)
    assert given.layout == "heads"
    with pytest.raises(ValueError) as raised:
        detect(given, [[np.zeros((1, 1575, 9), np.float32)]])
    assert str(raised.value) == "layout 'heads' needs three (1, 3*(5+C), H, W) outputs, got (1, 1575, 9)"


def test_setup_errors_name_the_spec_the_field_and_the_fix(tmp_path):
    spec = yolo_spec(tmp_path)
    needs_images = (f"{spec.path}: checks.yolov5: needs a model with one image input given as `images:` (write "
                    f"`inputs: {{images: {{images: 'val/*.jpg', letterbox: 640}}}}`)")
    cases = [
        (spec, fake_model(inputs=2), SINGLE_SHAPES, needs_images),
        (yolo_spec(tmp_path, {"random": [0, 1]}), fake_model(), SINGLE_SHAPES, needs_images),
        (spec, fake_model(), [(1, 10)],
         f"{spec.path}: checks.yolov5.layout: not a YOLOv5 output layout: got 1 output(s) with shapes (1, 10); "
         f"expected three raw heads (1, 3*(5+C), H, W) with the same channel count (rknn_model_zoo export) or one "
         f"output (1, N, 5+C) (ultralytics export with Detect inside)"),
        (yolo_spec(tmp_path, labels="nowhere.json"), fake_model(), SINGLE_SHAPES,
         f"{spec.path}: checks.yolov5.labels: not found: {tmp_path / 'nowhere.json'} (give a COCO json or a folder of "
         f"YOLO txt files, relative to the spec)"),
        (yolo_spec(tmp_path, labels=str(VAL / "labels.json")), fake_model(), [(1, 1575, 7)],  # a two-class model
         f"{spec.path}: checks.yolov5.labels: {VAL / 'labels.json'}: annotation 1: category_id 4 is class 3 "
         f"(categories are numbered in id order), but the model has 2 classes (0..1)"),
    ]
    for spec_, model, shapes, message in cases:
        with pytest.raises(SpecError) as raised:
            detection_setup(spec_, model, IMAGE_PATHS, shapes)
        assert (raised.value.failure_class, raised.value.message) == ("SPEC", message)


def test_images_of_one_name_in_two_folders_are_refused_rather_than_one_judged_twice(tmp_path):
    """Detections are kept per file name: a.jpg in two folders would leave one of them unjudged (or judged as
    the other), with or without labels."""
    twice = InputSet([], [], [], [], [str(VAL / "images" / "val_002.jpg"), str(tmp_path / "val_000.jpg"),
                                      str(VAL / "images" / "val_000.jpg"), str(tmp_path / "val_002.jpg"),
                                      str(VAL / "images" / "val_001.jpg")])
    for spec_ in (yolo_spec(tmp_path), yolo_spec(tmp_path, labels=str(VAL / "labels.json"))):
        with pytest.raises(SpecError) as raised:
            detection_setup(spec_, fake_model(), twice, SINGLE_SHAPES)
        assert raised.value.message == (f"{spec_.path}: inputs.in0.images: the detection check tells images apart by "
                                        f"file name, and these names occur more than once: val_000.jpg, val_002.jpg (give every "
                                        f"image its own file name)")


def single_output(*rows):
    return [np.array(rows, dtype=np.float32)[None]]


# In a 100 x 100 input: a 200 x 100 image is pasted 100 x 50 at y 25, a 100 x 200 one 50 x 100 at x 25.
WIDE_ROWS = [row(50, 50, 20, 10, 0.9, 0.1, 0.8),  # A: class 1, 0.72; in the wide image 80, 40, 120, 60
             row(52, 50, 20, 10, 0.8, 0.1, 0.75),  # B: class 1, 0.6, IoU 0.82 with A
             row(20, 30, 10, 10, 0.5, 0.6, 0.0)]  # C: class 0, 0.3
TALL_ROWS = [row(50, 50, 10, 20, 0.9, 1.0, 0.0),  # D: class 0, 0.9; in the tall image 40, 80, 60, 120
             row(70, 50, 20, 20, 0.7, 0.0, 1.0)]  # E: class 1, 0.7; runs off the tall image's right side
A, B, C = [80, 40, 120, 60, 0.72, 1], [84, 40, 124, 60, 0.6, 1], [30, 0, 50, 20, 0.3, 0]
D, E = [40, 80, 60, 120, 0.9, 0], [70, 80, 100, 120, 0.7, 1]


@pytest.mark.parametrize("check, wide, tall", [
    ({}, [A, C], [D, E]),
    ({"iou_threshold": 0.9}, [A, B, C], [D, E]),
    ({"conf_threshold": 0.4}, [A], [D, E]),
    ({"max_detections": 1}, [A], [D]),
])
def test_detect_finds_boxes_under_the_checks_thresholds_in_original_image_pixels(tmp_path, check, wide, tall):
    setup = yolo_setup(grey_images(tmp_path, wide=(200, 100), tall=(100, 200)), **check)
    found = detect(setup, [single_output(*WIDE_ROWS), single_output(*TALL_ROWS)])
    assert list(found) == ["wide.png", "tall.png"]
    np.testing.assert_allclose(found["wide.png"], np.array(wide).reshape(-1, 6), rtol=1e-6)
    np.testing.assert_allclose(found["tall.png"], np.array(tall).reshape(-1, 6), rtol=1e-6)


def test_detect_decodes_heads_with_the_checks_anchors_and_strides_and_undoes_a_stretch(tmp_path):
    heads = [np.zeros((1, 18, n, n), np.float32) for n in (4, 2, 1)]  # one class; strides 16, 32, 64 of 64 x 64
    heads[2][0, 0:6, 0, 0] = [0.5, 0.5, 0.5, 0.5, 0.9, 1.0]  # cx = cy = 32, w 7 and h 8: the first anchor of the last row
    setup = yolo_setup(grey_images(tmp_path, photo=(128, 64)), layout="heads", input_hw=(64, 64), letterboxed=False,
                       num_classes=1, anchors=[[1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6], [7, 8, 9, 10, 11, 12]],
                       strides=[16, 32, 64])
    found = detect(setup, [heads])
    np.testing.assert_allclose(found["photo.png"], [[57, 28, 71, 36, 0.9, 0]], rtol=1e-6)  # x stretched back by 2


def test_detect_on_the_fixture_model_finds_each_labelled_object_where_the_labels_put_it(fixture_yolo_outputs):
    paths, outputs, ground_truth, class_names = fixture_yolo_outputs
    found = detect(yolo_setup(paths, layout="heads", input_hw=(160, 160), num_classes=4), outputs)
    assert list(found) == YOLO_IMAGES
    for name, boxes in ground_truth.items():
        best = box_iou(np.array(boxes)[:, :4], found[name][:, :4]).max(axis=1)
        assert (best > 0.7).all(), (name, best)


def test_slice_cosines_are_the_worst_sample_per_output_and_part():
    rng = np.random.default_rng(5)
    reference = [[rng.uniform(0.1, 1, (1, 18, 1, 1)) for _ in range(3)] for _ in range(2)]  # 2 samples, 3 heads, C 1
    outputs = [[head.copy() for head in sample] for sample in reference]
    outputs[0][0][0, [4, 10, 16]] = reference[0][0][0, [4, 10, 16]] * [[[0]], [[1]], [[1]]]  # head 0 objectness
    outputs[1][1][0, [0, 1, 2, 3]] *= -1  # head 1: the second sample's boxes, anchor 0, flipped
    outputs[0][2][0, [5, 11, 17]] = 0  # head 2: the first sample's class scores all zero (NaN), the second's right
    objectness = reference[0][0][0, [4, 10, 16], 0, 0]
    boxes = reference[1][1][0, :, 0, 0].reshape(3, 6)[:, :4]
    expected = {
        "out0": {"boxes": 1.0, "objectness": float(objectness[1:] @ objectness[1:] / np.linalg.norm(objectness)
                                                   / np.linalg.norm(objectness[1:])), "classes": 1.0},
        "out1": {"boxes": float(1 - 2 * (boxes[0] @ boxes[0]) / (boxes.ravel() @ boxes.ravel())), "objectness": 1.0,
                 "classes": 1.0},
        "out2": {"boxes": 1.0, "objectness": 1.0, "classes": math.nan},
    }
    setup = yolo_setup([], layout="heads", num_classes=1)
    for samples in (slice(None), slice(None, None, -1)):  # whichever sample comes first
        worst = slice_cosines(setup, ["out0", "out1", "out2"], reference[samples], outputs[samples])
        assert list(worst) == list(expected)
        for name, parts in expected.items():
            assert worst[name] == pytest.approx(parts, nan_ok=True), name


def box100(x, class_id):
    """A 100 x 100 box at x, score 0.9; the IoU of two of them dx apart is (100 - dx) / (100 + dx)."""
    return [x, 0, x + 100, 100, 0.9, class_id]


def test_measure_maps_scores_rknn_and_onnxruntime_against_the_labels_and_rknn_against_onnxruntime():
    """Each pair of boxes is apart by an IoU passing a known count of the ten thresholds 0.5..0.95: the mAPs follow."""
    truth = {"a.png": [(0, 0, 100, 100, 0), (200, 0, 300, 100, 1)]}
    onnxruntime = {"a.png": np.array([box100(22, 0), box100(210, 1)])}  # IoU 0.64 (3 of 10) and 0.82 (7 of 10)
    rknn = {"a.png": np.array([box100(50, 0), box100(220, 1)])}  # 0.33 (none) and 0.67 (4); to onnxruntime's 2 and 7
    setup = yolo_setup([], ground_truth=truth)
    metrics = DetectionMetrics("single", [])
    measure_maps(setup, onnxruntime, rknn, metrics)
    figures = {k: getattr(metrics, k) for k in ("map50", "map", "ref_map50", "ref_map", "agreement_map50",
                                                "agreement_map")}
    assert figures == pytest.approx({"map50": 0.5, "map": 0.2, "ref_map50": 1.0, "ref_map": 0.5,
                                     "agreement_map50": 1.0, "agreement_map": 0.45})
    assert setup.reference_map == pytest.approx((1.0, 0.5))  # onnxruntime's: once for all the spec's backends

    unlabelled = DetectionMetrics("single", [])
    measure_maps(yolo_setup([]), onnxruntime, rknn, unlabelled)
    assert (unlabelled.map50, unlabelled.map, unlabelled.ref_map50, unlabelled.ref_map) == (None, None, None, None)
    assert (unlabelled.agreement_map50, unlabelled.agreement_map) == pytest.approx((1.0, 0.45))


@pytest.mark.parametrize("gates, figures, lines", [
    ({}, {"map50": 0.7, "ref_map50": 0.8}, {}),
    ({"map50_ratio": 0.9}, {"map50": 0.7, "ref_map50": 0.8}, {"map50": 0.72}),
    ({"max_map50_drop": 0.1}, {"map50": 0.7, "ref_map50": 0.8}, {"map50": 0.7}),
    ({"map50_ratio": 0.9, "max_map50_drop": 0.1}, {"map50": 0.7, "ref_map50": 0.8}, {"map50": 0.72}),  # strictest
    ({"map50_ratio": 0.8, "max_map50_drop": 0.1}, {"map50": 0.7, "ref_map50": 0.8}, {"map50": 0.7}),
    ({"map50_ratio": 0.9, "min_agreement_map50": 0.6}, {"map50": 0.7, "ref_map50": 0.8},
     {"map50": 0.72, "agreement_map50": 0.6}),
    ({"map50_ratio": 0.9, "max_map50_drop": 0.1}, {"map50": 0.7}, {}),  # onnxruntime's figure lost: no line to draw
    ({"map50_ratio": 0.9}, {"map50": 0.7, "ref_map50": math.nan}, {}),
    ({"map50_ratio": 0.9}, {}, {"agreement_map50": 0.9}),  # without labels: against onnxruntime's 1.0
    ({"max_map50_drop": 0.05}, {}, {"agreement_map50": 0.95}),
    ({"max_map50_drop": 0.05, "min_agreement_map50": 0.97}, {}, {"agreement_map50": 0.97}),
    ({"map50_ratio": 0.9, "min_agreement_map50": 0.5}, {}, {"agreement_map50": 0.9}),
    ({"min_agreement_map50": 0.0}, {}, {"agreement_map50": 0.0}),
])
def test_map_thresholds_are_the_line_each_gate_draws_and_the_strictest_of_several(gates, figures, lines):
    metrics = DetectionMetrics("heads", [], **figures)
    assert map_thresholds(YoloV5Check(**gates), metrics) == pytest.approx(lines)


def test_a_broken_head_shows_in_counts_slices_maps_and_the_pictures_of_the_worst_images(fixture_yolo_outputs,
                                                                                        tmp_path):
    """The fixture model with its stride-16 head's class scores lost: the objects that head finds are gone."""
    paths, outputs, ground_truth, class_names = fixture_yolo_outputs
    setup = yolo_setup(paths, layout="heads", input_hw=(160, 160), ground_truth=ground_truth, num_classes=4,
                       class_names=class_names, overlays=2)
    reference_detections = detect(setup, outputs)
    broken = [[head.copy() for head in sample] for sample in outputs]
    for sample in broken:
        sample[1].reshape(3, 9, 10, 10)[:, 5:] = 0
    toolkit = [[head[0] for head in sample] for sample in broken]  # the toolkit dropped the size-1 batch axis
    names = ["output0", "output1", "output2"]
    metrics = run_detection_check(setup, names, outputs, reference_detections, toolkit, tmp_path / "overlays")
    assert metrics.layout == "heads"
    assert metrics.counts == [("val_000.jpg", 3, 4), ("val_002.jpg", 4, 4), ("val_003.jpg", 3, 4)]
    assert metrics.slice_cosines["output1"]["classes"] != metrics.slice_cosines["output1"]["classes"]  # NaN
    assert metrics.slice_cosines["output1"]["boxes"] == pytest.approx(1.0)
    assert metrics.slice_cosines["output0"] == pytest.approx({"boxes": 1.0, "objectness": 1.0, "classes": 1.0})
    assert metrics.ref_map50 > metrics.map50 > 0.5 and metrics.agreement_map50 < 0.9
    assert metrics.overlays == [str(tmp_path / "overlays" / "00_val_000.png"),
                                str(tmp_path / "overlays" / "01_val_003.png")]  # most missed first, then by name
    for overlay in metrics.overlays:
        with Image.open(overlay) as picture:
            assert picture.format == "PNG"
    assert 0 < metrics.seconds < 60
    assert metrics.to_dict()["counts"] == metrics.counts and metrics.to_dict()["overlays"] == metrics.overlays


def test_the_worst_images_are_drawn_most_differing_first_then_by_name(tmp_path, monkeypatch):
    paths = grey_images(tmp_path, b=(30, 20), a=(30, 20), c=(30, 20), d=(30, 20))
    drawn = []
    monkeypatch.setattr("pytest_rknn.detection.check.draw_side_by_side",
                        lambda image, reference, candidate, out, class_names: drawn.append(
                            (image, reference, candidate, out, class_names)))
    counts = [("b.png", 0, 1), ("a.png", 2, 1), ("c.png", 1, 1), ("d.png", 5, 2)]
    reference = {name: np.full((n_ref, 6), k) for k, (name, _, n_ref) in enumerate(counts)}
    detections = {name: np.full((n, 6), 10 + k) for k, (name, n, _) in enumerate(counts)}
    setup = yolo_setup(paths, class_names=["x", "y"], overlays=3)
    folder = tmp_path / "job" / "overlays"
    assert _draw_worst(setup, reference, detections, counts, folder) == [
        str(folder / "00_d.png"), str(folder / "01_a.png"), str(folder / "02_b.png")]
    assert [(image, out) for image, _, _, out, _ in drawn] == [
        (str(tmp_path / "d.png"), folder / "00_d.png"), (str(tmp_path / "a.png"), folder / "01_a.png"),
        (str(tmp_path / "b.png"), folder / "02_b.png")]
    for image, left, right, _, class_names in drawn:  # onnxruntime's on the left, RKNN's on the right
        name = Path(image).name
        assert left is reference[name] and right is detections[name] and class_names == ["x", "y"]
    assert folder.is_dir()
    assert _draw_worst(yolo_setup(paths, overlays=0), reference, detections, counts, tmp_path / "none") == []
    assert not (tmp_path / "none").exists()


def test_a_labelled_failure_line_reads_both_maps_and_the_count_line_lists_five_images_at_most():
    labelled = DetectionMetrics("heads", [], map50=0.5, ref_map50=0.6, agreement_map50=0.9)
    assert detection_failures(YoloV5Check(max_map50_drop=0.05), labelled) == [
        "yolov5: mAP@0.5 dropped by 0.1000 (0.6000 -> 0.5000) > max 0.05; mAP@0.5 0.5000 vs onnxruntime 0.6000 "
        "(ground truth)"]
    five = [(f"{i}.jpg", 0, 2) for i in range(5)]
    assert detection_failures(YoloV5Check(count_tolerance=1), DetectionMetrics("heads", five, agreement_map50=1.0)) == [
        "yolov5: detection counts differ by more than 1 on 5 of 5 images (RKNN vs onnxruntime: 0.jpg: 0 vs 2, 1.jpg: "
        "0 vs 2, 2.jpg: 0 vs 2, 3.jpg: 0 vs 2, 4.jpg: 0 vs 2); agreement mAP@0.5 with onnxruntime 1.0000"]
    six = five + [("5.jpg", 4, 2)]
    [line] = detection_failures(YoloV5Check(count_tolerance=1), DetectionMetrics("heads", six, agreement_map50=1.0))
    assert "4.jpg: 0 vs 2, and 1 more); " in line
