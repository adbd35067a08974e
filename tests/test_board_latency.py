"""Board latency end to end, on the loopback test board: the remote runner times inference() after a
warm-up, the report carries median, p90 and the number of runs, and `checks.latency.max_ms` and
`baseline_gate.latency` fail a board item that got slower. The double's `slow:MS` fault makes
every run() MS milliseconds slower, so the numbers are known without being hard-coded."""

import json
import re
import shutil
from pathlib import Path

from conftest import MODELS, write_spec

from pytest_rknn.baseline import rounded

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
