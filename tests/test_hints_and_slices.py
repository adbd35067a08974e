"""Slice checks for any output and the hints that name the fix, in the real simulator: an int8 build
of an output that concatenates pixel-sized and 0..1 parts keeps its whole cosine and zeroes the small
part; the single-output YOLOv5 built int8 detects nothing. Plus the spec checks of slices and the
hints that need no build."""

import json

import numpy as np
import pytest
from conftest import FIXTURES, MODELS, write_spec

from pytest_rknn.detection.check import DetectionMetrics
from pytest_rknn.diagnosis.hints import hints_for
from pytest_rknn.early_checks import check_against_model
from pytest_rknn.errors import SpecError
from pytest_rknn.inputs import InputSet
from pytest_rknn.measurement import Measurement
from pytest_rknn.onnx_model import read_model_info
from pytest_rknn.spec import spec_from_dict

IMAGES = FIXTURES / "data" / "images"
YOLO = FIXTURES / "yolo"
CONCAT = f"""
model: {MODELS}/concat_ranges.onnx
inputs:
  images: {{images: "{IMAGES}/*.png"}}
convert:
  mean_values: [[0, 0, 0]]
  std_values: [[255, 255, 255]]
  quantize: {{dataset: "{IMAGES}/*.png"}}
checks:
  cosine:
    min: 0.99
    slices:
      - {{name: boxes, output: y, axis: 1, start: 0, stop: 4}}
      - {{name: scores, output: y, axis: 1, start: 4}}
"""


def test_a_zeroed_slice_of_a_concatenated_output_fails_while_the_whole_cosine_passes(run_pytest, tmp_path):
    write_spec(tmp_path, "concat", CONCAT)
    report = tmp_path / "report.json"
    result, _ = run_pytest(str(tmp_path), f"--rknn-json={report}")
    result.assert_outcomes(failed=1)
    [item] = json.loads(report.read_text())["items"]
    assert item["class"] == "ACCURACY" and item["metrics"]["cosine.y"] >= 0.99  # the whole output passes
    slices = {part["name"]: part for part in item["slices"]}
    assert slices["boxes"]["worst_cosine"] >= 0.99 and slices["scores"]["worst_cosine"] == "nan"
    assert item["message"].startswith("slice 'scores' of output 'y' (axis 1, 4:) sample ")
    assert "cosine nan < min 0.99 (undefined: an all-zero side)" in item["message"]
    low, high = slices["scores"]["ref_range"]
    assert 0 <= low < high <= 1 and slices["boxes"]["ref_range"][1] > 100  # the constructed ranges
    [hint] = item["hints"]
    assert "output 'y' holds parts of very different ranges in one int8 tensor" in hint and "'scores'" in hint
    assert "hint: output 'y' holds parts" in result.stdout.str()
    assert "I RKNN" in item["log_tail"] or "W RKNN" in item["log_tail"]  # an ACCURACY failure shows its log tail too


def test_the_single_output_int8_yolo_says_nothing_was_detected_and_names_both_fixes(run_pytest, tmp_path):
    write_spec(tmp_path, "single_int8", f"""
model: {YOLO}/yolov5_single.onnx
inputs: {{images: {{images: "{YOLO}/val/images/*.jpg", letterbox: 160}}}}
convert: {{mean_values: [[0, 0, 0]], std_values: [[255, 255, 255]], quantize: {{dataset: "{YOLO}/calib/*.jpg"}}}}
checks: {{cosine: {{min: 0.99}}, yolov5: {{count_tolerance: 1}}}}
""")
    report = tmp_path / "report.json"
    result, _ = run_pytest(str(tmp_path), f"--rknn-json={report}")
    result.assert_outcomes(failed=1)
    [item] = json.loads(report.read_text())["items"]
    expected = sum(n_ref for _, _, n_ref in item["detection"]["counts"])
    nothing = [h for h in item["hints"] if h.startswith("RKNN detected nothing")]
    assert nothing and f"0 of the {expected} objects onnxruntime found on 50 images" in nothing[0]
    for fix in ("three heads of the rknn_model_zoo layout", "keep that output out of int8"):
        assert fix in nothing[0], fix
    assert any("holds parts of very different ranges" in h and "boxes -" in h for h in item["hints"])


def spec_with(workdir, checks, **extra):
    return spec_from_dict({"model": "concat_ranges.onnx", "checks": checks, **extra}, base_dir=workdir)


@pytest.mark.parametrize("part, field, words", [
    ({"name": "s", "output": "z"}, "slices[0].output", "the model has no output 'z'"),
    ({"name": "s", "output": "y", "axis": 4}, "slices[0].axis", "has no axis 4"),
    ({"name": "s", "output": "y", "axis": 1, "stop": 7}, "slices[0].stop", "7 is past the end of axis 1"),
    ({"name": "s", "output": "y", "axis": 1, "start": 4, "stop": 4}, "slices[0].start", "empty or negative range"),
])
def test_a_slice_that_names_no_part_of_an_output_is_refused_before_the_build(workdir, part, field, words):
    copy_concat_model(workdir)
    spec = spec_with(workdir, {"cosine": {"slices": [part]}})
    with pytest.raises(SpecError) as info:
        check_against_model(spec, read_model_info(spec.model_path))
    assert info.value.field == f"checks.cosine.{field}" and words in info.value.message


def test_two_slices_of_one_name_are_refused(workdir):
    copy_concat_model(workdir)
    part = {"name": "s", "output": "y", "axis": 1}
    spec = spec_with(workdir, {"cosine": {"slices": [part, part]}})
    with pytest.raises(SpecError, match="two slices are named 's'"):
        check_against_model(spec, read_model_info(spec.model_path))


def copy_concat_model(workdir):
    (workdir / "concat_ranges.onnx").write_bytes((MODELS / "concat_ranges.onnx").read_bytes())


def test_normalisation_for_0_255_data_given_0_1_data_is_a_hint_and_a_letterbox_without_preprocess_too(workdir):
    copy_concat_model(workdir)
    model = read_model_info(workdir / "concat_ranges.onnx")
    spec = spec_with(workdir, {}, convert={"mean_values": [[127.5] * 3], "std_values": [[255] * 3],
                                           "quantize": {"dataset": "*.png", "preprocess": False}},
                     inputs={"images": {"images": "*.png", "letterbox": 32}})
    inputs = InputSet(["images"], ["nhwc"], [[np.random.default_rng(0).random((1, 32, 32, 3))]], ["random"])
    hints = hints_for(spec, model, inputs, None, Measurement([]))
    assert any("holds values in 0" in h and "for 0..255 data" in h for h in hints), hints
    assert any("letterboxed" in h and "preprocess: false" in h for h in hints), hints
    quiet = spec_with(workdir, {}, convert={"std_values": [[255] * 3]})
    assert hints_for(quiet, model, InputSet(["images"], ["nhwc"], [[np.full((1, 32, 32, 3), 200.0)]], ["x"]),
                     None, Measurement([])) == []  # 0..255 data scaled by 255: nothing to say


def test_a_detector_that_found_something_gets_no_nothing_detected_hint(workdir):
    copy_concat_model(workdir)
    detection = DetectionMetrics(layout="heads", counts=[("a.jpg", 1, 3), ("b.jpg", 0, 2)])
    spec = spec_with(workdir, {})
    model = read_model_info(workdir / "concat_ranges.onnx")
    assert hints_for(spec, model, InputSet([], [], [], []), None, Measurement([], detection)) == []
    detection.counts = [("a.jpg", 0, 3), ("b.jpg", 0, 2)]
    [hint] = hints_for(spec, model, InputSet([], [], [], []), None, Measurement([], detection))
    assert hint == "RKNN detected nothing: 0 of the 5 objects onnxruntime found on 2 images"
