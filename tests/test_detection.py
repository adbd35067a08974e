"""Detection library: YOLOv5 decoding, NMS, letterbox geometry, labels, mAP and overlays,
checked against hand-made cases, against `inputs._letterbox` and against pycocotools itself."""

import json
import math
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import FIXTURES
from pytest_rknn.detection.check import DetectionMetrics, detection_failures
from pytest_rknn.detection.geometry import letterbox_params, to_original
from pytest_rknn.detection.labels import load_ground_truth
from pytest_rknn.detection.metrics import agreement_map, coco_map, count_differences
from pytest_rknn.detection.nms import box_iou, non_max_suppression
from pytest_rknn.detection.check import setup as detection_setup
from pytest_rknn.detection.overlay import GAP, TITLE_HEIGHT, class_colour, draw_side_by_side, place_label
from pytest_rknn.inputs import prepare_inputs
from pytest_rknn.onnx_model import metadata_class_names, model_info, read_model_info
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
    with pytest.raises(ValueError, match=r"\(N, 5\+C\).*got shape \(3, 5\)"):
        non_max_suppression(np.zeros((3, 5)))


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

