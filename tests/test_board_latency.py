"""Board latency end to end, on the loopback test board: the remote runner times inference() after a
warm-up, the report carries median, p90 and the number of runs, and `checks.latency.max_ms` and
`baseline_gate.latency` fail a board item that got slower. The double's `slow:MS` fault makes
every run() MS milliseconds slower, so the numbers are known without being hard-coded."""

import json
import re
import shutil
from pathlib import Path

from conftest import MODELS, write_spec

import numpy as np
import pytest

from pytest_rknn.baseline import rounded
from pytest_rknn.board.remote_runner import measure_latency, percentile
from pytest_rknn.checks import latency_failures
from pytest_rknn.spec import spec_from_dict

TWO_SAMPLES = "inputs: {images: {random: [0, 1], count: 2, seed: 5}}\n"
SLOW_MS = 150


def json_items(report):
    return {i["backend"]: i for i in json.loads(report.read_text())["items"]}


def project(folder, name, spec_text):
    shutil.copy(MODELS / "cnn.onnx", folder / "cnn.onnx")
    write_spec(folder, name, "model: cnn.onnx\n" + spec_text)


def test_the_board_item_reports_median_and_p90_of_the_timed_runs_after_a_warm_up(board_pytest, pytester, tmp_path):
    project(pytester.path, "timed", TWO_SAMPLES + "checks: {latency: {runs: 6}}\n")
    report = tmp_path / "report.json"
    result, _ = board_pytest(f"--rknn-json={report}", "--rknn-core-mask=0_1")
    result.assert_outcomes(passed=2)
    items = json_items(report)
    assert items["sim"]["latency"] is None and "latency.median_ms" not in items["sim"]["metrics"]
    latency = items["board"]["latency"]
    assert set(latency) == {"median_ms", "p90_ms", "runs", "warmup", "core_mask"}
    assert latency["runs"] == 6 and latency["warmup"] == 1 and latency["core_mask"] == "NPU_CORE_0_1"
    assert 0 < latency["median_ms"] <= latency["p90_ms"]
    assert items["board"]["metrics"]["latency.median_ms"] == latency["median_ms"]  # what a baseline records
    # On the board: one warm-up, the two samples, then four more runs (the extra ones under the `latency` step).
    log = Path(items["board"]["log"]).read_text()
    assert log.count("[pytest-rknn] warm-up: inference sample 0") == 1
    assert re.findall(r"^\[pytest-rknn\] inference sample (\d+)$", log, re.M) == ["0", "1"]
    assert log.count("[pytest-rknn] step: latency") == 1
    assert log.index("warm-up") < log.index("inference sample 0") < log.index("step: latency")


def test_a_board_slower_than_checks_latency_max_ms_fails_as_performance(board_pytest, pytester, tmp_path):
    project(pytester.path, "sluggish", "checks: {latency: {max_ms: 50, runs: 2}}\n")
    board_pytest.board.set_fault("sluggish.rknn", f"slow:{SLOW_MS}")
    report = tmp_path / "report.json"
    result, _ = board_pytest(f"--rknn-json={report}")
    result.assert_outcomes(passed=1, failed=1)
    items = json_items(report)
    assert items["sim"]["outcome"] == "passed"
    board = items["board"]
    latency = board["latency"]
    assert board["class"] == "PERFORMANCE" and latency["runs"] == 2
    assert SLOW_MS <= latency["median_ms"] <= latency["p90_ms"]
    line, = [f for f in board["failures"] if "checks.latency.max_ms" in f]
    assert line == (f"median inference time on the board {latency['median_ms']:.3g} ms > checks.latency.max_ms 50 "
                    f"(p90 {latency['p90_ms']:.3g} ms over 2 runs after a warm-up, core mask NPU_CORE_AUTO)")
    result.stdout.fnmatch_lines([f"*[[]PERFORMANCE[]] sluggish[[]2.5.0-board[]]*{latency['median_ms']:.3g} ms > "
                                 f"checks.latency.max_ms 50*"])


def test_a_board_slower_than_its_baseline_fails_the_latency_gate(board_pytest, pytester, tmp_path):
    project(pytester.path, "steady", "checks: {latency: {runs: 2}}\n")
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    result, _ = board_pytest("--rknn-baseline=rknn-baseline", "--rknn-baseline-update", f"--rknn-json={first}")
    result.assert_outcomes(passed=2)
    recorded = json.loads((pytester.path / "rknn-baseline" / "steady.json").read_text())["entries"]["2.5.0-board"]
    before = recorded["metrics"]["latency.median_ms"]
    assert before == rounded(json_items(first)["board"]["latency"]["median_ms"])  # at the file's precision

    board_pytest.board.set_fault("steady.rknn", f"slow:{SLOW_MS}")  # the same artifact, now on a slower board
    result, _ = board_pytest("--rknn-baseline=rknn-baseline", f"--rknn-json={second}")
    result.assert_outcomes(passed=1, failed=1)
    items = json_items(second)
    assert items["sim"]["outcome"] == "passed"
    assert items["board"]["fingerprint"]["rknn_sha256"] == json_items(first)["board"]["fingerprint"]["rknn_sha256"]
    board = items["board"]
    now = board["latency"]["median_ms"]
    assert board["class"] == "PERFORMANCE" and now >= SLOW_MS > before
    delta, = [c["deltas"]["latency.median_ms"] for c in board["comparisons"] if c["against"] == "baseline"]
    assert delta["failed"] and delta["allowed"] == 0.25 and delta["reference"] == before
    line, = [f for f in board["failures"] if "latency.median_ms" in f]
    assert line.startswith(f"baseline rknn-baseline/steady.json: latency.median_ms {delta['value']:.6g} vs "
                           f"{before:.6g} (")
    assert "baseline_gate.latency allows 25% more" in line
    result.stdout.fnmatch_lines(["*[[]PERFORMANCE[]] steady[[]2.5.0-board[]]*latency.median_ms*"])


def test_the_latency_gate_judges_the_median_not_the_p90_or_the_slowest_run(workdir):
    spec = spec_from_dict({"model": "cnn.onnx", "checks": {"latency": {"max_ms": 50}}}, base_dir=workdir)
    latency = lambda median, p90: {"median_ms": median, "p90_ms": p90, "runs": 5, "warmup": 1,
                                   "core_mask": "NPU_CORE_AUTO"}
    assert latency_failures(spec, latency(40.0, 80.0)) == []  # a slow tail, a median under the limit
    assert latency_failures(spec, latency(50.0, 50.0)) == []  # at the limit is within it
    [line] = latency_failures(spec, latency(50.5, 51.0))
    assert line == ("median inference time on the board 50.5 ms > checks.latency.max_ms 50 "
                    "(p90 51 ms over 5 runs after a warm-up, core mask NPU_CORE_AUTO)")
    unchecked = spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir)
    assert latency_failures(unchecked, latency(1e6, 1e6)) == [] and latency_failures(spec, None) == []


@pytest.mark.parametrize("values", [[3.0], [5.0, 1.0], [4.0, 1.0, 9.0], [7.0, 1.0, 2.0, 30.0, 4.0, 6.0],
                                    list(np.random.default_rng(3).random(11) * 100)])
def test_median_and_p90_interpolate_between_ranks_like_numpy(values):
    ordered = sorted(values)
    for p in (0, 50, 90, 100):
        assert percentile(ordered, p) == pytest.approx(float(np.percentile(values, p)), abs=1e-12), p


class TimedLite:
    """inference() as the board's RKNNLite: outputs or None; each call's sample recorded."""

    def __init__(self, failing=()):
        self.calls, self.failing = [], set(failing)

    def inference(self, inputs, data_format=None):
        self.calls.append(inputs)
        return None if inputs in self.failing else [np.zeros(1)]


def test_latency_runs_cycle_through_the_good_samples_until_the_wanted_count_and_failed_calls_do_not_count():
    lite = TimedLite()
    times = [0.010, 0.030]  # the normal pass: two samples, 10 and 30 ms
    latency = measure_latency(lite, lambda s: s, "nhwc", [0, 1], times, 5, "NPU_CORE_0")
    assert lite.calls == [0, 1, 0] and latency["runs"] == 5 and latency["core_mask"] == "NPU_CORE_0"
    assert latency["median_ms"] <= 30.0 and latency["p90_ms"] >= latency["median_ms"]
    assert measure_latency(TimedLite(), lambda s: s, "nhwc", [0], [0.02, 0.02, 0.02], 2, "m")["runs"] == 3  # never fewer
    failing = TimedLite(failing={1})
    latency = measure_latency(failing, lambda s: s, "nhwc", [0, 1], [0.01], 4, "m")
    assert failing.calls == [0, 1, 0] and latency["runs"] == 3  # at most 4 calls in all; the failed one untimed
    assert measure_latency(TimedLite(), lambda s: s, "nhwc", [], [], 4, "m") is None
