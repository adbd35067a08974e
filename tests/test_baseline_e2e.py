"""Baselines end to end: record, catch a regression, re-record, survive a killed run, pytest-xdist."""

import difflib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import IMAGES, MODELS, write_spec

from pytest_rknn.comparisons import worsening

INT8_SPEC = """
model: cnn.onnx
inputs:
  images: {images: inputs/*.png, limit: 4}
convert:
  mean_values: [[0, 0, 0]]
  std_values: [[255, 255, 255]]
  quantize: {dataset: calib/*.png}
checks:
  cosine: {min: -1.0}   # out of the way (no cosine is below -1): every failure here is the baseline's
baseline_gate: {cosine: 0.001, max_abs: 1.0e+9}   # max_abs is compared, and no error of these outputs comes near 1e9
"""
COSINE_GATE = 0.001


def make_int8_project(folder):
    shutil.copy(MODELS / "cnn.onnx", folder / "cnn.onnx")
    for name in ("inputs", "calib"):
        shutil.copytree(IMAGES, folder / name)
    write_spec(folder, "cnn_int8", INT8_SPEC)


def pixels(folder):
    return [np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))]


def darken_calibration(folder):
    """Same file names, darker pictures, so the model file and the spec (the baseline's key) stay the
    same. The brightest calibration pixel ends up at half the darkest pixel of any input, so the int8
    activation ranges, calibrated on those pictures, are far too small for every real input: its
    activations clip from the first layer on, a large loss whose direction is known."""
    darkest_input = min(int(image.min()) for image in pixels(folder / "inputs"))
    brightest_calibration = max(int(image.max()) for image in pixels(folder / "calib"))
    factor = 0.5 * darkest_input / brightest_calibration
    for path in (folder / "calib").glob("*.png"):
        image = np.asarray(Image.open(path)).astype(np.float32)
        Image.fromarray((image * factor).astype(np.uint8)).save(path)
    assert max(int(image.max()) for image in pixels(folder / "calib")) < darkest_input / 2 + 1


def worse_by(name, delta):
    return worsening(name, delta["value"], delta["reference"])


def metric_lines(text):
    return {line.strip() for line in text.splitlines() if line.strip().startswith(('"cosine.', '"max_abs.'))}


def test_a_regression_fails_only_its_metric_with_both_values_until_re_recorded(run_pytest, pytester, tmp_path):
    make_int8_project(pytester.path)
    baseline = pytester.path / "rknn-baseline"
    result, _ = run_pytest("--rknn-baseline=rknn-baseline", "--rknn-baseline-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pytest-rknn: baseline rknn-baseline/cnn_int8.json: created (2.5.0-sim)"])
    recorded = (baseline / "cnn_int8.json").read_text()
    entry = json.loads(recorded)["entries"]["2.5.0-sim"]
    assert set(entry["metrics"]) == {"cosine.logits", "cosine.features", "max_abs.logits", "max_abs.features",
                                     "cpu_ops", "cycles", "memory.internal", "memory.weight", "memory.rknn_file"}

    result, _ = run_pytest("--rknn-baseline=rknn-baseline")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"cnn_int8\s+2\.5\.0\s+sim\s+.*\s+cos =\s+passed"])

    darken_calibration(pytester.path)
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    result, _ = run_pytest("--rknn-baseline=rknn-baseline", f"--rknn-json={report}", f"--junitxml={junit}")
    result.assert_outcomes(failed=1)
    item = json.loads(report.read_text())["items"][0]
    assert item["class"] == "ACCURACY"
    comparison, = item["comparisons"]
    deltas = comparison["deltas"]
    assert set(deltas) == set(entry["metrics"])  # all four compared, max_abs too
    # Every cosine dropped by far more than the gate; no max_abs error can exceed its allowance of 1e9.
    cosines = {name for name in deltas if name.startswith("cosine.")}
    assert all(worse_by(name, deltas[name]) > 50 * COSINE_GATE for name in cosines), deltas
    assert all(deltas[name]["allowed"] == 1e9 and not deltas[name]["failed"] for name in deltas
               if name.startswith("max_abs."))
    assert deltas["cpu_ops"]["delta"] == 0  # darker calibration images change the scales, not where layers run
    failing = {name for name, d in deltas.items() if worse_by(name, d) > d["allowed"]}
    assert failing == cosines == {name for name, d in deltas.items() if d["failed"]}
    assert len(item["failures"]) == len(failing)  # the baseline's failures and nothing else
    for name in failing:
        line = next(line for line in item["failures"] if f": {name} " in line)
        assert line.startswith(f"baseline rknn-baseline/cnn_int8.json: {name} {deltas[name]['value']:.6g} vs "
                               f"{deltas[name]['reference']:.6g} (worse by {worse_by(name, deltas[name]):.4g}; "
                               f"baseline_gate.cosine allows 0.001)")
    assert item["failures"][-1].endswith("; if this is expected, re-record with --rknn-baseline-update")
    result.stdout.fnmatch_lines(["*re-record with --rknn-baseline-update*"])
    # The same deltas in the JUnit XML.
    properties = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert properties["rknn.class"] == "ACCURACY"
    for name, delta in deltas.items():
        assert properties[f"rknn.vs.baseline.{name}"] == f"{delta['delta']:+.6g}"

    result, _ = run_pytest("--rknn-baseline=rknn-baseline", "--rknn-baseline-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pytest-rknn: baseline rknn-baseline/cnn_int8.json: updated (2.5.0-sim)"])
    rerecorded = (baseline / "cnn_int8.json").read_bytes()
    file_id = (baseline / "cnn_int8.json").stat().st_ino, (baseline / "cnn_int8.json").stat().st_mtime_ns
    result, _ = run_pytest("--rknn-baseline=rknn-baseline")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"cnn_int8\s+2\.5\.0\s+sim\s+.*\s+cos =\s+passed"])
    result, _ = run_pytest("--rknn-baseline=rknn-baseline", "--rknn-baseline-update")  # nightly, nothing changed
    result.stdout.fnmatch_lines(["pytest-rknn: baseline rknn-baseline/cnn_int8.json: unchanged (2.5.0-sim)"])
    assert (baseline / "cnn_int8.json").read_bytes() == rerecorded
    assert ((baseline / "cnn_int8.json").stat().st_ino, (baseline / "cnn_int8.json").stat().st_mtime_ns) == file_id
    # The diff a reviewer sees: one line out and one in per metric whose value changed, nothing else.
    now = (baseline / "cnn_int8.json").read_text()
    changed = [line for line in difflib.unified_diff(recorded.splitlines(), now.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    moved = {name for name, value in json.loads(now)["entries"]["2.5.0-sim"]["metrics"].items()
             if value != entry["metrics"][name]}
    assert cosines <= moved
    assert sorted(line[1:].strip() for line in changed if line[0] == "-") == sorted(
        line for line in metric_lines(recorded) if line.split('"')[1] in moved)
    assert sorted(line[1:].strip() for line in changed if line[0] == "+") == sorted(
        line for line in metric_lines(now) if line.split('"')[1] in moved)


def test_a_changed_model_has_no_baseline_rather_than_an_old_one(run_pytest, pytester):
    import onnx

    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    run_pytest("--rknn-baseline=bl", "--rknn-baseline-update")[0].assert_outcomes(passed=1)
    model = onnx.load(pytester.path / "cnn.onnx")
    model.doc_string = "retrained"
    onnx.save(model, pytester.path / "cnn.onnx")
    result, _ = run_pytest("--rknn-baseline=bl")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*RknnWarning: no baseline for this model: bl/cnn.json [[]2.5.0-sim[]] was recorded "
                                 "for model sha256 *, this one is *; record it with --rknn-baseline-update*"])
    result.stdout.re_match_lines([r"cnn\s+2\.5\.0\s+sim\s+.*no baseline\s+passed"])

    # --rknn-baseline-strict, from the command line and from the ini file: the same missing baseline fails (SPEC)
    strict_failure = ["*[[]SPEC[]] cnn[[]2.5.0-sim[]]: no baseline for this model: bl/cnn.json *"
                      "(--rknn-baseline-strict: every item needs its baseline)*"]
    result, _ = run_pytest("--rknn-baseline=bl", "--rknn-baseline-strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(strict_failure)
    pytester.makeini("[pytest]\nrknn_baseline = bl\nrknn_baseline_strict = true\n")
    result, _ = run_pytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(strict_failure)


def test_update_without_a_baseline_folder_is_a_usage_error(run_pytest, pytester):
    result, _ = run_pytest("--rknn-baseline-update")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--rknn-baseline-update needs --rknn-baseline=DIR*"])


SLOW_WRITE = """
import os, time
from pytest_rknn import atomic

def pytest_runtest_logreport(report):
    if report.when == "call":
        open(os.environ["MARK_DIR"] + "/" + report.nodeid.split("::")[-1], "w").close()
        time.sleep(float(os.environ.get("PAUSE_AFTER_ITEM", "0")))

def _slow_fsync(fd, real=os.fsync):
    real(fd)
    # os.fsync is global: pause only for a file being written into the folder under test.
    synced = os.readlink(f"/proc/self/fd/{fd}")
    if os.path.dirname(synced) == os.path.realpath(os.environ.get("PAUSE_IN_WRITE_TO", "/nowhere")):
        with open(os.environ["MARK_DIR"] + "/writing.tmp", "w") as mark:
            mark.write(synced)
        os.rename(os.environ["MARK_DIR"] + "/writing.tmp", os.environ["MARK_DIR"] + "/writing")
        time.sleep(float(os.environ["PAUSE"]))

os.fsync = _slow_fsync  # what pytest_rknn.atomic calls; anyone else's fsync passes straight through
assert atomic.os.fsync is _slow_fsync
"""


def _start(pytester, marks, *args, **env):
    env = dict(os.environ, MARK_DIR=str(marks), PAUSE="60", **{k.upper(): str(v) for k, v in env.items()})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pytester.path), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "slow_write",
                             f"--basetemp={marks.parent / 'basetemp'}", *args], cwd=pytester.path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(path, process, timeout):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, (f"the run ended before {path.name} appeared (for `writing`: no file in the "
                                        f"folder under test was synced, so it was not written atomically):\n"
                                        + process.stdout.read().decode())
        assert time.monotonic() < deadline, f"{path.name} did not appear within {timeout:.0f} s"
        time.sleep(0.05)


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.endswith(".tmp")}


def test_killing_a_run_half_way_leaves_the_previous_baseline_and_report_intact(run_pytest, pytester, toolkit_cache,
                                                                               tmp_path):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    for name in ("a", "b"):
        write_spec(pytester.path, name, "model: cnn.onnx\n")
    pytester.makepyfile(slow_write=SLOW_WRITE)
    baseline, reports = pytester.path / "bl", pytester.path / "reports"
    started = time.monotonic()
    result, _ = run_pytest("--rknn-baseline=bl", "--rknn-baseline-update", "--rknn-json=reports/report.json")
    result.assert_outcomes(passed=2)
    # A killed run gets as far as this one did, or less: the marks must come well within that time.
    timeout = 30 + 3 * (time.monotonic() - started)
    before, report_before = _files(baseline), (reports / "report.json").read_bytes()
    old_configs = {json.loads(text)["entries"]["2.5.0-sim"]["config_hash"] for text in before.values()}
    # Now the spec records a different model config: an update would change both files.
    for name in ("a", "b"):
        write_spec(pytester.path, name, "model: cnn.onnx\ninputs: {images: {random: [0, 1], seed: 7}}\n")
    update, report = ["--rknn-baseline=bl", "--rknn-baseline-update"], ["--rknn-json=reports/report.json"]

    # Killed between items, killed while writing the baseline, interrupted (Ctrl-C) between items (an
    # interrupted run still writes its report: only the baseline is promised to stay), and killed
    # while writing the JSON report of a run that does not touch the baseline.
    cases = (("between items", update + report, {"pause_after_item": 60}, "a[2.5.0-sim]", signal.SIGKILL),
             ("while writing the baseline", update + report, {"pause_in_write_to": baseline}, "writing",
              signal.SIGKILL),
             ("by Ctrl-C", update, {"pause_after_item": 60}, "a[2.5.0-sim]", signal.SIGINT),
             ("while writing the report", report + ["a.rknn.yaml"], {"pause_in_write_to": reports}, "writing",
              signal.SIGKILL))
    for how, args, env, mark, sig in cases:
        marks = tmp_path / how.replace(" ", "_") / "marks"
        marks.mkdir(parents=True)
        process = _start(pytester, marks, f"--rknn-toolkit-cache={toolkit_cache}", *args, **env)
        try:
            _wait_for(marks / mark, process, timeout)
            os.killpg(process.pid, sig) if sig == signal.SIGKILL else process.send_signal(sig)
            output = process.communicate(timeout=30)[0].decode()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
        assert _files(baseline) == before, how
        assert (reports / "report.json").read_bytes() == report_before, how
        if sig == signal.SIGINT:
            assert "baseline NOT updated: the run was interrupted, the recorded one stays" in output
        if mark == "writing":
            # It died in the middle of the write: the new content was complete, in a file of its own.
            written = Path((marks / mark).read_text())
            assert written.parent == env["pause_in_write_to"] and written.name not in set(before) | {"report.json"}
            new = json.loads(written.read_text())
            if "items" in new:
                assert [i["spec"] for i in new["items"]] == ["a"]
            else:
                assert new["entries"]["2.5.0-sim"]["config_hash"] not in old_configs


def test_xdist_workers_lose_no_entries(run_pytest, pytester, tmp_path):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    names = [f"s{i}" for i in range(4)]
    for seed, name in enumerate(names):
        write_spec(pytester.path, name, f"model: cnn.onnx\ninputs: {{images: {{random: [0, 1], seed: {seed}}}}}\n")
    report = tmp_path / "report.json"
    result, _ = run_pytest("-n", "2", "--rknn-toolkit=2.3.2,2.5.0", "--rknn-baseline=bl", "--rknn-baseline-update",
                           f"--rknn-json={report}")
    result.assert_outcomes(passed=8)
    items = json.loads(report.read_text())["items"]
    assert sorted((i["spec"], i["version"]) for i in items) == sorted((n, v) for n in names for v in ("2.3.2", "2.5.0"))
    for name in names:
        entries = json.loads((pytester.path / "bl" / f"{name}.json").read_text())["entries"]
        assert sorted(entries) == ["2.3.2-sim", "2.5.0-sim"]
    assert not [p for p in (pytester.path / "bl").iterdir() if p.name.startswith(".")]
