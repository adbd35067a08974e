"""Baselines end to end: record, catch a regression, re-record, survive a killed run, pytest-xdist."""

import difflib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from conftest import IMAGES, MODELS, write_spec

INT8_SPEC = """
model: cnn.onnx
inputs:
  images: {images: inputs/*.png, limit: 4}
convert:
  mean_values: [[0, 0, 0]]
  std_values: [[255, 255, 255]]
  quantize: {dataset: calib/*.png}
checks:
  cosine: {min: 0.98}
baseline_gate: {cosine: 0.001}
"""


def make_int8_project(folder):
    shutil.copy(MODELS / "cnn.onnx", folder / "cnn.onnx")
    for name in ("inputs", "calib"):
        shutil.copytree(IMAGES, folder / name)
    write_spec(folder, "cnn_int8", INT8_SPEC)


def darken_calibration(folder, factor):
    """Same file names, darker pictures: the int8 ranges shrink and the build gets slightly worse,
    while the model file and the spec (the baseline's key) stay the same."""
    for path in (folder / "calib").glob("*.png"):
        pixels = np.asarray(Image.open(path)).astype(np.float32)
        Image.fromarray((pixels * factor).astype(np.uint8)).save(path)


def test_a_regression_fails_only_its_metric_with_both_values_until_re_recorded(run_pytest, pytester, tmp_path):
    make_int8_project(pytester.path)
    baseline = pytester.path / "rknn-baseline"
    result, _ = run_pytest("--rknn-baseline=rknn-baseline", "--rknn-baseline-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pytest-rknn: baseline rknn-baseline/cnn_int8.json: created (2.5.0-sim)"])
    recorded = (baseline / "cnn_int8.json").read_text()
    entry = json.loads(recorded)["entries"]["2.5.0-sim"]
    assert set(entry["metrics"]) == {"cosine.logits", "cosine.features", "max_abs.logits", "max_abs.features"}

    result, _ = run_pytest("--rknn-baseline=rknn-baseline")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"cnn_int8\s+2\.5\.0\s+sim\s+.*\s+cos =\s+passed"])

    darken_calibration(pytester.path, 0.9)
    report = tmp_path / "report.json"
    result, _ = run_pytest("--rknn-baseline=rknn-baseline", f"--rknn-json={report}")
    result.assert_outcomes(failed=1)
    item = json.loads(report.read_text())["items"][0]
    assert item["class"] == "ACCURACY"
    deltas = item["comparisons"][0]["deltas"]
    regressed = {name for name, d in deltas.items() if d["reference"] - d["value"] > 0.001 and "cosine" in name}
    assert regressed and regressed != {n for n in deltas if n.startswith("cosine.")}  # one output got worse, not both
    assert {name for name, d in deltas.items() if d["failed"]} == regressed
    assert len(item["failures"]) == len(regressed)  # the absolute threshold (0.98) still holds
    for name in regressed:
        line = next(line for line in item["failures"] if f": {name} " in line)
        assert f"{deltas[name]['value']:.6g} vs {deltas[name]['reference']:.6g}" in line
        assert line.startswith("baseline rknn-baseline/cnn_int8.json:") and "baseline_gate.cosine allows 0.001" in line
    result.stdout.fnmatch_lines(["*re-record with --rknn-baseline-update*"])

    result, _ = run_pytest("--rknn-baseline=rknn-baseline", "--rknn-baseline-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pytest-rknn: baseline rknn-baseline/cnn_int8.json: updated (2.5.0-sim)"])
    result, _ = run_pytest("--rknn-baseline=rknn-baseline")
    result.assert_outcomes(passed=1)
    result, _ = run_pytest("--rknn-baseline=rknn-baseline", "--rknn-baseline-update")  # nightly, nothing changed
    result.stdout.fnmatch_lines(["pytest-rknn: baseline rknn-baseline/cnn_int8.json: unchanged (2.5.0-sim)"])
    changed = [line for line in difflib.unified_diff(recorded.splitlines(), (baseline / "cnn_int8.json").read_text()
                                                     .splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    # The diff a reviewer sees: the four metrics, one line each, nothing else.
    assert 2 <= len(changed) <= 8
    assert all(any(key in line for key in ('"cosine.', '"max_abs.')) for line in changed), changed


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


def test_update_without_a_baseline_folder_is_a_usage_error(run_pytest, pytester):
    result, _ = run_pytest("--rknn-baseline-update")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--rknn-baseline-update needs --rknn-baseline=DIR*"])


SLOW_WRITE = """
import os, time
import pytest
from pytest_rknn import atomic

def pytest_runtest_logreport(report):
    if report.when == "call":
        open(os.environ["MARK_DIR"] + "/" + report.nodeid.split("::")[-1], "w").close()
        time.sleep(float(os.environ.get("PAUSE_AFTER_ITEM", "0")))

def _slow_fsync(fd, real=atomic.os.fsync):
    real(fd)
    open(os.environ["MARK_DIR"] + "/writing", "w").close()
    time.sleep(float(os.environ.get("PAUSE_IN_WRITE", "0")))

atomic.os.fsync = _slow_fsync
"""


def _start(pytester, marks, *args, **pauses):
    env = dict(os.environ, MARK_DIR=str(marks), PYTHONPATH=str(pytester.path),
               **{k.upper(): str(v) for k, v in pauses.items()})
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "slow_write",
                             f"--basetemp={marks.parent / 'basetemp'}", *args], cwd=pytester.path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(path, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.1)


def test_killing_a_run_half_way_leaves_the_previous_baseline_intact(run_pytest, pytester, toolkit_cache, tmp_path):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    for name in ("a", "b"):
        write_spec(pytester.path, name, "model: cnn.onnx\n")
    pytester.makepyfile(slow_write=SLOW_WRITE)
    run_pytest("--rknn-baseline=bl", "--rknn-baseline-update")[0].assert_outcomes(passed=2)
    before = {p.name: p.read_bytes() for p in (pytester.path / "bl").iterdir()}
    # Now the spec records a different model config: an update would change both files.
    for name in ("a", "b"):
        write_spec(pytester.path, name, "model: cnn.onnx\ninputs: {images: {random: [0, 1], seed: 7}}\n")
    options = ["--rknn-baseline=bl", "--rknn-baseline-update", f"--rknn-toolkit-cache={toolkit_cache}"]

    # Killed between items, killed while writing, interrupted (Ctrl-C) between items.
    for how, pauses, mark, sig in (("between items", {"pause_after_item": 60}, "a[2.5.0-sim]", signal.SIGKILL),
                                   ("while writing", {"pause_in_write": 60}, "writing", signal.SIGKILL),
                                   ("by Ctrl-C", {"pause_after_item": 60}, "a[2.5.0-sim]", signal.SIGINT)):
        marks = tmp_path / how.replace(" ", "_") / "marks"
        marks.mkdir(parents=True)
        process = _start(pytester, marks, *options, **pauses)
        try:
            _wait_for(marks / mark, process)
            os.killpg(process.pid, sig) if sig == signal.SIGKILL else process.send_signal(sig)
            output = process.communicate(timeout=60)[0].decode()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        assert {p.name: p.read_bytes() for p in (pytester.path / "bl").iterdir()
                if not p.name.endswith(".tmp")} == before, how
        if sig == signal.SIGINT:
            assert "baseline NOT updated: the run was interrupted, the recorded one stays" in output
    result, _ = run_pytest("--rknn-baseline=bl")  # the old baseline is still a valid baseline file
    result.assert_outcomes(passed=2, warnings=2)
    result.stdout.fnmatch_lines(["*no baseline for this model config*"])


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
