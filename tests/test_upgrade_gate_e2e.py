"""--rknn-compare-to end to end, on the real 2.3.2 and 2.5.0 simulators, and the JSON report
read by the README's example script."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import FIXTURES, job_dirs, render_in_chromium, write_spec

from pytest_rknn.onnx_model import file_sha256

YOLO = FIXTURES / "yolo"
README = Path(__file__).resolve().parent.parent / "README.md"

# The three-head int8 detector: 2.5.0's mAP@0.5 is 0.918 and 2.3.2's 0.924 on the fixture's
# 50 images (the simulator is deterministic), well above the absolute gate (0.9 x onnxruntime's 0.918).
DETECTOR = f"""
model: {YOLO}/yolov5_heads.onnx
inputs:
  images: {{images: "{YOLO}/val/images/*.jpg", letterbox: 160}}
convert:
  mean_values: [[0, 0, 0]]
  std_values: [[255, 255, 255]]
  quantize: {{dataset: "{YOLO}/calib/*.jpg"}}
checks:
  cosine: {{min: 0.97}}
  yolov5: {{labels: {YOLO}/val/labels.json, count_tolerance: 1, map50_ratio: 0.9}}
"""


def readme_script() -> str:
    text = README.read_text()
    block = text.split("<!-- json-report-example -->", 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def test_the_gate_fails_a_version_whose_map_dropped_more_than_allowed(run_pytest, pytester, tmp_path):
    write_spec(pytester.path, "yolo", DETECTOR)
    write_spec(pytester.path, "yolo_strict", DETECTOR + "gate: {map50: 0.005}\n")
    report, page = tmp_path / "report.json", tmp_path / "report.html"
    result, _ = run_pytest("--rknn-toolkit=2.3.2,2.5.0", "--rknn-compare-to=2.3.2", f"--rknn-json={report}",
                           f"--rknn-html={page}")
    result.assert_outcomes(passed=3, failed=1)
    items = {(i["spec"], i["version"]): i for i in json.loads(report.read_text())["items"]}
    strict = items["yolo_strict", "2.5.0"]
    old_map, new_map = items["yolo_strict", "2.3.2"]["metrics"]["map50"], strict["metrics"]["map50"]
    assert new_map >= 0.9 * strict["detection"]["ref_map50"]  # the absolute threshold passes...
    assert 0.005 < old_map - new_map <= 0.01  # ...but it dropped by more than the strict gate, less than the default
    assert strict["class"] == "ACCURACY" and len(strict["failures"]) == 1
    assert strict["failures"][0] == (f"upgrade gate vs 2.3.2 (this run): map50 {new_map:.6g} vs {old_map:.6g} "
                                     f"(worse by {old_map - new_map:.4g}; gate.map50 allows 0.005)")
    fingerprint = strict["fingerprint"]
    assert fingerprint["toolkit_version"] == "2.5.0" and fingerprint["toolkit_env"]["onnx"] == "1.18.0"
    assert {"python", "onnx", "onnxruntime", "numpy"} <= set(fingerprint["host"])
    assert fingerprint["model_sha256"] == file_sha256(YOLO / "yolov5_heads.onnx")
    assert fingerprint["rknn_sha256"] != items["yolo_strict", "2.3.2"]["fingerprint"]["rknn_sha256"]
    assert fingerprint["config_hash"] == items["yolo", "2.5.0"]["fingerprint"]["config_hash"]  # a gate is no config
    assert strict["timings"]["build"] > 0 and strict["timings"]["inference"] > 0
    # Everything passes under the default gate, and the summary still shows how 2.5.0 moved.
    assert items["yolo", "2.5.0"]["outcome"] == "passed"
    result.stdout.re_match_lines([r"yolo\s+2\.3\.2\s+sim\s+.*\s+-\s+passed",
                                  rf"yolo\s+2\.5\.0\s+sim\s+.*\s+cos \+[0-9.e-]+\s+mAP50 {new_map - old_map:+.2g}\s+passed"])

    html = page.read_text()
    assert html.count("<svg") == 4  # per spec: cosine per output and mAP@0.5, per version
    assert html.count("data:image/png;base64,") == 4 * 3  # the three worst images of each item, embedded
    assert "upgrade gate vs 2.3.2 (this run): map50" in html and "model sha256" in html
    # The failed item's overlays are open, so a browser shows them: find their pixels in a screenshot.
    window = (1280, 6000)
    screen = np.asarray(Image.open(render_in_chromium(page, tmp_path, window)).convert("RGB"))
    overlay = np.asarray(Image.open(strict["detection"]["overlays"][0]).convert("RGB"))
    assert shows(screen, overlay[overlay.shape[0] // 2])

    table = subprocess.run([sys.executable, "-c", readme_script(), str(report)], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert table[0].split() == ["spec", "2.3.2", "2.5.0"]
    assert table[1].split() == ["yolo", f"{old_map:.3f}", f"{new_map:.3f}"]
    assert table[2].split() == ["yolo_strict", f"{old_map:.3f}", f"{new_map:.3f}", "ACCURACY"]


def shows(screen, pixels) -> bool:
    """Whether this row of pixels appears, exactly, somewhere on the screen."""
    for y, x in zip(*np.nonzero((screen == pixels[0]).all(axis=2))):
        if (screen[y, x:x + len(pixels)].shape == pixels.shape) and (screen[y, x:x + len(pixels)] == pixels).all():
            return True
    return False


def test_the_gate_reads_the_old_version_from_the_baseline_without_running_it(run_pytest, pytester):
    write_spec(pytester.path, "yolo", DETECTOR + "gate: {map50: 0.005}\n")
    run_pytest("--rknn-toolkit=2.3.2", "--rknn-baseline=bl", "--rknn-baseline-update")[0].assert_outcomes(passed=1)
    result, basetemp = run_pytest("--rknn-toolkit=2.5.0", "--rknn-compare-to=2.3.2", "--rknn-baseline=bl")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*upgrade gate vs 2.3.2 (baseline): map50 0.91* vs 0.92* (worse by *; "
                                 "gate.map50 allows 0.005)*"])
    assert list(job_dirs(basetemp, "yolo")) == ["2.5.0"]  # 2.3.2 came from the file, not from a build


def test_comparing_a_version_with_itself_only_is_a_usage_error(run_pytest):
    result, _ = run_pytest("--rknn-toolkit=2.3.2", "--rknn-compare-to=2.3.2")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--rknn-compare-to=2.3.2 is the only version tested*"])
