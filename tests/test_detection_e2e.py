"""Detection checks end to end on the fixture YOLOv5, in the real simulator and on the test board."""

import json
import re
import xml.etree.ElementTree as ET

from conftest import EXAMPLES, FIXTURES, job_dirs, write_spec

YOLO = FIXTURES / "yolo"
FAILURE_LINE = re.compile(r"^FAILED \S+::(.+?) - \[(\w+)\]", re.M)


def yolo_spec(folder, name, model, quantize, checks):
    convert = "convert: {mean_values: [[0, 0, 0]], std_values: [[255, 255, 255]]"
    convert += f", quantize: {{dataset: '{YOLO}/calib/*.jpg'}}}}" if quantize else "}"
    return write_spec(folder, name, f"model: {YOLO / model}\n"
                                    f"inputs: {{images: {{images: '{YOLO}/val/images/*.jpg', letterbox: 160}}}}\n"
                                    f"{convert}\nchecks: {checks}\n")


def junit_properties(path):
    return {case.get("name"): dict((p.get("name"), p.get("value")) for p in case.iter("property"))
            for case in ET.parse(path).getroot().iter("testcase")}


def test_detection_gates_with_and_without_labels_and_what_the_reports_say(run_pytest, pytester, tmp_path):
    """Constructed outcomes. RKNN-FACTS: the single-output export built int8 keeps its whole-output
    cosine and detects nothing at all (one int8 scale for pixel boxes and 0..1 scores), so every
    mAP of it is 0.0 while onnxruntime's is not; an fp16 build detects what onnxruntime detects.
    Without labels, onnxruntime's own detections are the truth (its score 1.0): fp16 agrees, int8 does not.
    (The three-head int8 export keeping its mAP is the example suite's, below.)"""
    labels = f"labels: '{YOLO}/val/labels.json'"
    yolo_spec(pytester.path, "single_int8", "yolov5_single.onnx", True,
              f"{{cosine: {{min: 0.99}}, yolov5: {{{labels}, count_tolerance: 1, map50_ratio: 0.9, "
              f"max_map50_drop: 0.02}}}}")
    yolo_spec(pytester.path, "heads_fp16", "yolov5_heads.onnx", False,
              f"{{cosine: {{min: 0.999}}, yolov5: {{{labels}, count_tolerance: 0, map50_ratio: 0.98, "
              f"max_map50_drop: 0.02}}}}")
    yolo_spec(pytester.path, "agree_fp16", "yolov5_single.onnx", False,
              "{cosine: {min: 0.999}, yolov5: {count_tolerance: 0, map50_ratio: 0.95, max_map50_drop: 0.02}}")
    yolo_spec(pytester.path, "agree_int8", "yolov5_single.onnx", True,
              "{cosine: {min: 0.99}, yolov5: {count_tolerance: null, map50_ratio: 0.95, max_map50_drop: 0.5}}")
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    result, basetemp = run_pytest(f"--rknn-json={report}", f"--junitxml={junit}")
    out = result.stdout.str()
    result.assert_outcomes(passed=2, failed=2)
    assert dict(FAILURE_LINE.findall(out)) == {"single_int8[2.5.0-sim]": "ACCURACY", "agree_int8[2.5.0-sim]": "ACCURACY"}
    items = {i["spec"]: i for i in json.loads(report.read_text())["items"]}

    # int8 single-output with labels: nothing found, so the count, ratio and drop gates all fail,
    # each with its numbers; the whole-output cosine still passes (it is above 0.99 in the summary).
    single = items["single_int8"]
    d = single["detection"]
    assert all(n == 0 for _, n, _ in d["counts"]) and d["map50"] == 0.0 and d["ref_map50"] > 0.5
    assert single["metrics"]["cosine.output0"] > 0.99
    row = re.search(r"^single_int8\s+2\.5\.0\s+sim\s+(0\.\d+)\s+(\S+ \(ort \S+\))\s+NPU .*\s+failed\s+ACCURACY", out, re.M)
    assert row and float(row.group(1)) > 0.99, out
    summary = f"mAP@0.5 {d['map50']:.4f} vs onnxruntime {d['ref_map50']:.4f} (ground truth)"
    off = [(image, n, n_ref) for image, n, n_ref in d["counts"] if abs(n - n_ref) > 1]
    assert off and len(single["failures"]) == 3
    count_line, ratio_line, drop_line = single["failures"]
    assert count_line.startswith(f"yolov5: detection counts differ by more than 1 on {len(off)} of 50 images "
                                 f"(RKNN vs onnxruntime: {off[0][0]}: 0 vs {off[0][2]}, ")
    assert count_line.endswith(f"); {summary}")
    assert ratio_line == f"yolov5: mAP@0.5 {d['map50']:.4f} < 0.9 x onnxruntime's {d['ref_map50']:.4f}; {summary}"
    assert drop_line == (f"yolov5: mAP@0.5 dropped by {d['ref_map50'] - d['map50']:.4f} ({d['ref_map50']:.4f} -> "
                         f"{d['map50']:.4f}) > max 0.02; {summary}")
    assert re.search(rf"^\[ACCURACY\] single_int8\[2\.5\.0-sim\]: {re.escape(count_line)} \(and 2 more\)$", out, re.M)
    # Pictures of the worst images are left for a person to look at.
    overlays = sorted((job_dirs(basetemp, "single_int8")["2.5.0"] / "overlays").glob("*.png"))
    # The report names copies next to it (report-files/), relative to its folder: they outlive basetemp.
    copies = [report.parent / p for p in d["overlays"]]
    assert len(overlays) == 3 and sorted(p.name for p in copies) == [p.name for p in overlays]
    assert all(p.parent == tmp_path / "report-files" / "single_int8" / "2.5.0-sim" for p in copies)
    assert [p.read_bytes() for p in sorted(copies)] == [p.read_bytes() for p in overlays]

    # fp16 with labels: onnxruntime's detections, so its mAP, within the ratio and the drop.
    fp16 = items["heads_fp16"]["detection"]
    assert items["heads_fp16"]["outcome"] == "passed"
    assert [n for _, n, _ in fp16["counts"]] == [n_ref for _, _, n_ref in fp16["counts"]]
    assert abs(fp16["ref_map50"] - fp16["map50"]) <= 0.02 and fp16["map50"] >= 0.98 * fp16["ref_map50"]

    # Without labels the gates apply to the agreement with onnxruntime, whose own score is 1.0.
    agree = items["agree_fp16"]
    assert agree["outcome"] == "passed" and agree["detection"]["map50"] is None
    assert agree["detection"]["ref_map50"] is None and agree["detection"]["agreement_map50"] >= 0.95
    lost = items["agree_int8"]
    a = lost["detection"]["agreement_map50"]
    assert a == 0.0 and lost["detection"]["map50"] is None
    agreement = f"agreement mAP@0.5 with onnxruntime {a:.4f}"
    assert lost["failures"] == [f"yolov5: {agreement} < 0.95 x onnxruntime's 1.0000; {agreement}",
                                f"yolov5: agreement mAP@0.5 with onnxruntime dropped by {1 - a:.4f} (1.0000 -> "
                                f"{a:.4f}) > max 0.5; {agreement}"]
    result.stdout.re_match_lines([rf"agree_fp16\s+2\.5\.0\s+sim\s+\S+\s+agree "
                                  rf"{agree['detection']['agreement_map50']:.3f}\s+NPU .*\s+passed",
                                  r"agree_int8\s+2\.5\.0\s+sim\s+\S+\s+agree 0\.000\s+NPU .*\s+failed\s+ACCURACY"])

    # JUnit XML: the detection figures and the class, as the JSON report has them.
    properties = junit_properties(junit)
    for spec, item in items.items():
        props = properties[f"{spec}[2.5.0-sim]"]
        assert props.get("rknn.class") == item["class"]
        assert props["rknn.outcome"] == item["outcome"]
        for key in ("map50", "ref_map50", "agreement_map50"):
            value = item["detection"][key]
            assert props.get(f"rknn.yolov5.{key}") == (None if value is None else f"{value:.4f}"), (spec, key)
        assert props["rknn.cosine.output0"] == f"{item['metrics']['cosine.output0']:.8f}"


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
