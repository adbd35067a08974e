"""Detection checks end to end on the fixture YOLOv5, in the real simulator and on the test board."""

import re

from conftest import EXAMPLES, FIXTURES, job_dirs, write_spec

YOLO = FIXTURES / "yolo"
FAILURE_LINE = re.compile(r"^FAILED \S+::(.+?) - \[(\w+)\]", re.M)


def yolo_spec(folder, name, model, quantize, checks):
    convert = "convert: {mean_values: [[0, 0, 0]], std_values: [[255, 255, 255]]"
    convert += f", quantize: {{dataset: '{YOLO}/calib/*.jpg'}}}}" if quantize else "}"
    return write_spec(folder, name, f"model: {YOLO / model}\n"
                                    f"inputs: {{images: {{images: '{YOLO}/val/images/*.jpg', letterbox: 160}}}}\n"
                                    f"{convert}\nchecks: {checks}\n")


def test_int8_single_output_keeps_its_cosine_and_loses_its_detections(run_pytest, pytester):
    """RKNN-FACTS: one int8 scale for pixel boxes and 0..1 scores. Cosine passes; detection does not.
    The three-head export survives int8 with a reasonable gate; fp16 builds of both pass strict ones."""
    yolo_spec(pytester.path, "single_int8", "yolov5_single.onnx", True,
              f"{{cosine: {{min: 0.99}}, yolov5: {{labels: '{YOLO}/val/labels.json', count_tolerance: 1, "
              f"map50_ratio: 0.9}}}}")
    yolo_spec(pytester.path, "heads_int8", "yolov5_heads.onnx", True,
              f"{{cosine: {{min: 0.97}}, yolov5: {{labels: '{YOLO}/val/labels.json', count_tolerance: 1, "
              f"map50_ratio: 0.9}}}}")
    yolo_spec(pytester.path, "heads_fp16", "yolov5_heads.onnx", False,
              f"{{cosine: {{min: 0.999}}, yolov5: {{labels: '{YOLO}/val/labels.json', count_tolerance: 0, "
              f"map50_ratio: 0.98}}}}")
    result, basetemp = run_pytest()
    out = result.stdout.str()
    result.assert_outcomes(passed=2, failed=1)
    assert dict(FAILURE_LINE.findall(out)) == {"single_int8[2.5.0-sim]": "ACCURACY"}
    # The whole-output cosine is above 0.99 in the summary, and the failure is the detection check:
    row = re.search(r"^single_int8\s+2\.5\.0\s+sim\s+(0\.\d+)\s+(\S+ \(ort \S+\))\s+failed\s+ACCURACY", out, re.M)
    assert row and float(row.group(1)) > 0.99, out
    message = re.search(r"^\[ACCURACY\] single_int8\[2\.5\.0-sim\]: (.*)$", out, re.M).group(1)
    assert re.search(r"yolov5: detection counts differ by more than 1 on \d+ of 50 images \(RKNN vs onnxruntime: "
                     r"\S+\.jpg: \d+ vs \d+, ", message), message
    assert re.search(r"mAP@0\.5 0\.\d{4} vs onnxruntime 0\.[89]\d{3} \(ground truth\)", message), message
    # Pictures of the worst images are left for a person to look at.
    overlays = sorted((job_dirs(basetemp, "single_int8")["2.5.0"] / "overlays").glob("*.png"))
    assert len(overlays) == 3


def test_the_example_detectors_pass_with_their_detection_metrics(run_pytest, pytester):
    pytester.makepyfile(test_api=f"""
        import pytest

        @pytest.mark.rknn_spec("{EXAMPLES}/yolov5_heads_int8.rknn.yaml")
        def test_heads(rknn_result):
            assert rknn_result.passed, rknn_result.message
            d = rknn_result.detection
            assert d.layout == "heads" and len(d.counts) == 50
            assert d.ref_map50 >= 0.8 and d.map50 >= 0.9 * d.ref_map50
            assert set(d.slice_cosines[rknn_result.outputs[0].name]) == {{"boxes", "objectness", "classes"}}

        @pytest.mark.rknn_spec("{EXAMPLES}/yolov5_single.rknn.yaml")
        def test_single(rknn_result):
            assert rknn_result.passed, rknn_result.message
            assert rknn_result.detection.layout == "single" and rknn_result.detection.agreement_map50 > 0.95
    """)
    result, _ = run_pytest("test_api.py")
    result.assert_outcomes(passed=2)


def test_detection_checks_run_on_board_items_too(board_pytest, pytester):
    pytester.makepyfile(test_api=f"""
        import pytest

        @pytest.mark.rknn_spec("{EXAMPLES}/yolov5_single.rknn.yaml")
        def test_single(rknn_result):
            assert rknn_result.passed, rknn_result.message
            assert rknn_result.detection is not None and len(rknn_result.detection.counts) == 50
    """)
    result, _ = board_pytest("test_api.py", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_single?2.5.0-board? PASSED*"])
