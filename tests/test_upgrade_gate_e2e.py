"""--rknn-compare-to end to end, on the real 2.3.2 and 2.5.0 simulators, and the JSON report
read by the README's example script.

The regressions are constructed, so their direction and size are known without a measured number:
the spec's `versions:` override builds the single-output YOLO (Detect inside) int8 on 2.5.0 and fp16
on 2.3.2. RKNN-FACTS: one int8 scale has to cover pixel boxes up to ~850 and 0..1 scores, so every
score rounds to 0 and the int8 build detects nothing at all (mAP 0.0, exactly), while the fp16 build
matches onnxruntime (its mAP is onnxruntime's, 0.92 on the fixture). The drop is about 0.92 against a
gate of 0.01. The pass cases are constructed too: the same fp16 config on both versions (differences
far below any gate), and the same regression with allowances no mAP (0..1) or cosine (-1..1) can exceed.
"""

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, job_dirs, render_in_chromium, write_spec

from pytest_rknn.onnx_model import file_sha256

YOLO = FIXTURES / "yolo"
README = Path(__file__).resolve().parent.parent / "README.md"

# fp16 in every version; labels give mAP@0.5, and no absolute detection gate is set, so only the
# upgrade gate can fail a detector that finds nothing.
FP16_DETECTOR = f"""
model: {YOLO}/yolov5_single.onnx
inputs:
  images: {{images: "{YOLO}/val/images/*.jpg", letterbox: 160}}
convert:
  mean_values: [[0, 0, 0]]
  std_values: [[255, 255, 255]]
checks:
  cosine: {{min: 0.99}}
  yolov5: {{labels: {YOLO}/val/labels.json, count_tolerance: null}}
"""
# ...and int8 on 2.5.0 only: the constructed regression.
INT8_ON_2_5_0 = f'versions: {{"2.5.0": {{convert: {{quantize: {{dataset: "{YOLO}/calib/*.jpg"}}}}}}}}\n'
REGRESSED = FP16_DETECTOR + INT8_ON_2_5_0
STRICT_MAP50 = 0.01
# Allowances that cannot be exceeded: an mAP is in 0..1, a cosine in -1..1. These tests are about the
# numbers, so the cost gates are off: the int8 build's estimated cycles are 5.5% above the fp16 build's
# (measured: 341208 vs 323349), which gate.cycles would fail on its own (see test_placement.py).
COSTS_OFF = "cycles: null, memory: null, cpu_ops: null"
LOOSE_GATE = f"gate: {{map50: 1.0, map: 1.0, agreement_map50: 1.0, cosine: 2.0, {COSTS_OFF}}}\n"


def readme_script() -> str:
    text = README.read_text()
    block = text.split("<!-- json-report-example -->", 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def gate_line(source: str, name: str, delta: dict, allowed: float) -> str:
    """The README's upgrade gate failure line, from the JSON report's delta."""
    return (f"upgrade gate vs 2.3.2 ({source}): {name} {delta['value']:.6g} vs {delta['reference']:.6g} "
            f"(worse by {delta['reference'] - delta['value']:.4g}; gate.{name.split('.')[0]} allows {allowed:g})")


def cell(delta: dict) -> str:
    """How the summary's `vs 2.3.2` column shows one delta."""
    return (f"{delta['delta']:+.2g}" if delta["delta"] else "=") + ("!" if delta["failed"] else "")


def junit_properties(path: Path) -> dict:
    return {case.get("name"): dict((p.get("name"), p.get("value")) for p in case.iter("property"))
            for case in ET.parse(path).getroot().iter("testcase")}


def test_the_gate_fails_a_version_whose_map_dropped_more_than_allowed(run_pytest, pytester, tmp_path):
    write_spec(pytester.path, "steady", FP16_DETECTOR)
    write_spec(pytester.path, "strict", REGRESSED + f"gate: {{map50: {STRICT_MAP50}, {COSTS_OFF}}}\n")
    report, page, junit = tmp_path / "report.json", tmp_path / "report.html", tmp_path / "junit.xml"
    result, basetemp = run_pytest("--rknn-toolkit=2.3.2,2.5.0", "--rknn-compare-to=2.3.2", f"--rknn-json={report}",
                                  f"--rknn-html={page}", f"--junitxml={junit}")
    result.assert_outcomes(passed=3, failed=1)
    items = {(i["spec"], i["version"]): i for i in json.loads(report.read_text())["items"]}
    assert sorted(items) == [(s, v) for s in ("steady", "strict") for v in ("2.3.2", "2.5.0")]
    strict, old = items["strict", "2.5.0"], items["strict", "2.3.2"]
    old_map, new_map = old["metrics"]["map50"], strict["metrics"]["map50"]
    ref_map = strict["detection"]["ref_map50"]
    # The construction: fp16 on 2.3.2 finds what onnxruntime finds, int8 on 2.5.0 finds nothing.
    assert old["detection"]["counts"] == [[image, n_ref, n_ref] for image, _, n_ref in old["detection"]["counts"]]
    # (fp16 scores differ from fp32 in the last digits, which may reorder a ranking: far below the gate)
    assert old_map == pytest.approx(ref_map, abs=STRICT_MAP50 / 10) and ref_map > 0.5
    assert all(n == 0 for _, n, _ in strict["detection"]["counts"]) and new_map == 0.0
    assert old_map - new_map > 50 * STRICT_MAP50  # far beyond the gate, with no measured number in the margin

    # The absolute checks pass (cosine; no detection gate); the upgrade gate alone fails it, once per
    # metric that is worse than 2.3.2's by more than the gate allows: the three mAPs by construction.
    assert strict["class"] == "ACCURACY" and strict["metrics"]["cosine.output0"] >= 0.99
    comparison, = strict["comparisons"]
    assert (comparison["against"], comparison["source"]) == ("2.3.2", "this run")
    deltas = comparison["deltas"]
    assert deltas["map50"]["reference"] == pytest.approx(old_map) and deltas["map50"]["value"] == new_map
    allowed = {"cosine": 0.002, "map50": STRICT_MAP50, "map": 0.01, "agreement_map50": 0.02}  # the rest: defaults
    expected = [gate_line("this run", name, d, allowed[name.split(".")[0]]) for name, d in deltas.items()
                if name.split(".")[0] in allowed and d["reference"] - d["value"] > allowed[name.split(".")[0]]]
    assert {"map50", "map", "agreement_map50"} <= {line.split(": ")[1].split()[0] for line in expected}
    assert strict["failures"] == expected
    assert (f"upgrade gate vs 2.3.2 (this run): map50 {new_map:.6g} vs {old_map:.6g} "
            f"(worse by {old_map - new_map:.4g}; gate.map50 allows {STRICT_MAP50:g})") in strict["failures"]

    # The same fp16 config on both versions passes the default gate: fp16 matches onnxruntime, so
    # the two versions differ by far less than any gate.
    steady = items["steady", "2.5.0"]
    assert steady["outcome"] == "passed"
    steady_deltas = steady["comparisons"][0]["deltas"]
    assert abs(steady_deltas["cosine.output0"]["delta"]) < 1e-4 and abs(steady_deltas["map50"]["delta"]) < 1e-3
    # The compare-to version is never compared with itself.
    assert all(items[spec, "2.3.2"]["comparisons"] == [] for spec in ("steady", "strict"))

    # Summary: the worst change per metric family, `!` where the gate failed.
    strict_cell = (f"cos {cell(deltas['cosine.output0'])}  mAP50 {cell(deltas['map50'])}  "
                   f"mAP {cell(deltas['map'])}")
    assert cell(deltas["map50"]).endswith("!") and cell(deltas["map"]).endswith("!")  # by construction
    result.stdout.re_match_lines([
        r"steady\s+2\.3\.2\s+sim\s+.*\s+-\s+passed",
        rf"steady\s+2\.5\.0\s+sim\s+.*\s+cos {re.escape(cell(steady_deltas['cosine.output0']))}\s+mAP50 "
        rf"{re.escape(cell(steady_deltas['map50']))}\s+passed",
        rf"strict\s+2\.5\.0\s+sim\s+.*\s+{re.escape(strict_cell)}\s+failed\s+ACCURACY"])

    # Every item is what its own version built: the toolkit that ran, and the sha256 of the .rknn
    # file in its own job folder (each version builds its own file).
    for (spec, version), item in items.items():
        job_dir = job_dirs(basetemp, spec)[version]
        fingerprint = item["fingerprint"]
        assert fingerprint["toolkit_version"] == version and Path(item["log"]).parent == job_dir
        assert fingerprint["rknn_sha256"] == file_sha256(job_dir / f"{spec}.rknn")
        assert json.loads((job_dir / "result.json").read_text())["toolkit_version"] == version
    fingerprint = strict["fingerprint"]
    assert fingerprint["toolkit_env"]["onnx"] == "1.18.0"
    assert {"python", "onnx", "onnxruntime", "numpy"} <= set(fingerprint["host"])
    assert fingerprint["model_sha256"] == file_sha256(YOLO / "yolov5_single.onnx")
    assert fingerprint["config_hash"] != old["fingerprint"]["config_hash"]  # the override is a config of its own
    assert strict["timings"]["build"] > 0 and strict["timings"]["inference"] > 0

    # JUnit XML: the class and the deltas against 2.3.2, as the JSON report has them.
    properties = junit_properties(junit)
    strict_props = properties["strict[2.5.0-sim]"]
    assert strict_props["rknn.class"] == "ACCURACY" and strict_props["rknn.toolkit_version"] == "2.5.0"
    assert strict_props["rknn.rknn_sha256"] == fingerprint["rknn_sha256"]
    for name, delta in deltas.items():
        assert strict_props[f"rknn.vs.2.3.2.{name}"] == f"{delta['delta']:+.6g}"
    assert float(strict_props["rknn.vs.2.3.2.map50"]) == pytest.approx(new_map - old_map, abs=1e-5)
    assert "rknn.class" not in properties["steady[2.5.0-sim]"]
    assert not any(key.startswith("rknn.vs.") for key in properties["strict[2.3.2-sim]"])

    html = page.read_text()
    # Per spec: cosine per output, the cosine before (2.3.2) and now (2.5.0), and mAP@0.5, per version; then
    # the profile's cycles, memory, .rknn size and CPU layers (the single-output YOLO runs a Reshape on the
    # CPU), per version.
    assert html.count("<svg") == 2 * (3 + 4)
    assert html.count('aria-label="Worst cosine per output, before and now') == 2
    # The three worst images of each item, embedded: the failed item's at full size, the others as thumbnails.
    assert html.count("data:image/png;base64,") == 3 and html.count("data:image/jpeg;base64,") == 3 * 3
    assert gate_line("this run", "map50", deltas["map50"], STRICT_MAP50) in html and "model sha256" in html
    # The failed item's overlays are open, so a browser shows them: find their pixels in a screenshot.
    window = (1280, 6000)
    screen = np.asarray(Image.open(render_in_chromium(page, tmp_path, window)).convert("RGB"))
    overlay = np.asarray(Image.open(report.parent / strict["detection"]["overlays"][0]).convert("RGB"))
    assert shows(screen, overlay[overlay.shape[0] // 2])

    table = subprocess.run([sys.executable, "-c", readme_script(), str(report)], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert table[0].split() == ["spec", "2.3.2", "2.5.0"]
    maps = {key: f"{item['metrics']['map50']:.3f}" for key, item in items.items()}
    assert table[1].split() == ["steady", maps["steady", "2.3.2"], maps["steady", "2.5.0"]]
    assert table[2].split() == ["strict", f"{old_map:.3f}", "0.000", "ACCURACY"]


def shows(screen, pixels) -> bool:
    """Whether this row of pixels appears, exactly, somewhere on the screen."""
    for y, x in zip(*np.nonzero((screen == pixels[0]).all(axis=2))):
        if (screen[y, x:x + len(pixels)].shape == pixels.shape) and (screen[y, x:x + len(pixels)] == pixels).all():
            return True
    return False


def test_the_gate_takes_the_old_version_from_the_baseline_or_else_runs_it(run_pytest, pytester, tmp_path):
    """README: the compare-to results come from the baseline when it holds them for this model and
    config, or else the compare-to version is run for the comparison (without being an item).
    The same constructed regression twice: under allowances it cannot exceed (passes), and under
    the default gate (fails)."""
    write_spec(pytester.path, "loose", REGRESSED + LOOSE_GATE)
    run_pytest("--rknn-toolkit=2.3.2", "--rknn-baseline=bl", "--rknn-baseline-update")[0].assert_outcomes(passed=1)
    recorded = json.loads((pytester.path / "bl" / "loose.json").read_text())["entries"]
    assert list(recorded) == ["2.3.2-sim"]
    write_spec(pytester.path, "unrecorded", REGRESSED)  # the baseline holds nothing for this one
    report = tmp_path / "report.json"
    result, basetemp = run_pytest("--rknn-toolkit=2.5.0", "--rknn-compare-to=2.3.2", "--rknn-baseline=bl",
                                  f"--rknn-json={report}")
    result.assert_outcomes(passed=1, failed=1, warnings=2)  # the warnings: no 2.5.0 baseline for either spec
    items = {i["spec"]: i for i in json.loads(report.read_text())["items"]}
    assert sorted((i["spec"], i["version"]) for i in items.values()) == [("loose", "2.5.0"), ("unrecorded", "2.5.0")]
    assert not re.search(r"^\w+\s+2\.3\.2\s+sim", result.stdout.str(), re.M)  # no 2.3.2 row in the summary

    # From the baseline: its recorded numbers are the reference, and 2.3.2 did not run.
    loose = items["loose"]
    from_baseline = loose["comparisons"][1]
    assert (from_baseline["against"], from_baseline["source"]) == ("2.3.2", "baseline")
    assert {n: d["reference"] for n, d in from_baseline["deltas"].items()} == recorded["2.3.2-sim"]["metrics"]
    assert list(job_dirs(basetemp, "loose")) == ["2.5.0"]
    # The regression is there (int8 finds nothing, 2.3.2's fp16 found onnxruntime's detections), and
    # allowances no mAP or cosine can exceed let it pass.
    delta = from_baseline["deltas"]["map50"]
    assert delta["value"] == 0.0 and delta["reference"] > 50 * 0.01
    assert loose["outcome"] == "passed" and loose["failures"] == []
    assert not any(d["failed"] for d in from_baseline["deltas"].values())
    result.stdout.re_match_lines([rf"loose\s+2\.5\.0\s+sim\s+.*\s+no baseline\s+cos "
                                  rf"{re.escape(cell(from_baseline['deltas']['cosine.output0']))}\s+mAP50 "
                                  rf"{re.escape(cell(delta))}\s+passed"])

    # Not in the baseline: 2.3.2 really ran, its own fp16 config (the override is 2.5.0's only), for
    # the comparison only.
    unrecorded = items["unrecorded"]
    run_now = unrecorded["comparisons"][1]
    assert (run_now["against"], run_now["source"]) == ("2.3.2", "this run")
    assert sorted(job_dirs(basetemp, "unrecorded")) == ["2.3.2", "2.5.0"]
    built = json.loads((job_dirs(basetemp, "unrecorded")["2.3.2"] / "result.json").read_text())
    assert built["toolkit_version"] == "2.3.2"
    ref_map = unrecorded["detection"]["ref_map50"]
    assert run_now["deltas"]["map50"]["reference"] == pytest.approx(ref_map, abs=0.001)
    assert run_now["deltas"]["cosine.output0"]["reference"] > 0.9999
    delta = run_now["deltas"]["map50"]
    assert delta["value"] == 0.0 and delta["reference"] - delta["value"] > 50 * 0.01
    assert unrecorded["class"] == "ACCURACY" and gate_line("this run", "map50", delta, 0.01) in unrecorded["failures"]
    result.stdout.fnmatch_lines([f"*{gate_line('this run', 'map50', delta, 0.01)}*"])
    for item in (loose, unrecorded):
        assert item["comparisons"][0]["against"] == "baseline" and "no baseline for" in item["comparisons"][0]["missing"]


def test_comparing_a_version_with_itself_only_is_a_usage_error(run_pytest):
    result, _ = run_pytest("--rknn-toolkit=2.3.2", "--rknn-compare-to=2.3.2")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--rknn-compare-to=2.3.2 is the only version tested*"])
