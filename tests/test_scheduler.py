"""--rknn-jobs: simulator jobs run ahead of their items on a pool of threads, results unchanged."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from types import SimpleNamespace

import pytest

from conftest import EXAMPLES, MODELS, alive, job_dirs, write_spec

from pytest_rknn.errors import RknnError
from pytest_rknn.runner import RknnRunner
from pytest_rknn.scheduler import JobScheduler, threads_per_process, xdist_worker_count
from pytest_rknn.toolkit.envs import Provisioner, ToolkitRequest

NO_RESULT_CACHE = "--rknn-no-cache"  # every job really runs its worker


def item_lines(result):
    """The item names in the order pytest -v reported them."""
    return re.findall(r"::(\S+) (?:PASSED|FAILED)", result.stdout.str())


def verdicts(report_path):
    """{item: (outcome, class, metrics)} from a --rknn-json report: every cosine of every item."""
    items = json.loads(report_path.read_text())["items"]
    return {f"{r['spec']}[{r['version']}-{r['backend']}]": (r["outcome"], r["class"], r["metrics"]) for r in items}


def test_the_example_suite_gives_the_same_results_with_one_job_and_with_two(run_pytest, tmp_path):
    collected = re.findall(r"::(\S+)$", run_pytest(str(EXAMPLES), "--collect-only", "-q")[0].stdout.str(), re.M)
    results = {}
    for jobs in (1, 2):
        report = tmp_path / f"jobs{jobs}.json"
        result, _ = run_pytest(str(EXAMPLES), f"--rknn-jobs={jobs}", NO_RESULT_CACHE, f"--rknn-json={report}", "-v")
        result.assert_outcomes(passed=7)
        assert item_lines(result) == collected, jobs  # items stay in collection order
        results[jobs] = verdicts(report)
    assert len(results[1]) == 7 and results[1] == results[2]  # same classes and cosines, bit for bit


TIMES = """
import threading, time

def pytest_rknn_artifact_built(spec, version, rknn_path, sha256):
    with open("times.txt", "a") as handle:
        handle.write(f"built {spec.name} {time.time()!r} {threading.current_thread().name}\\n")

def pytest_runtest_logfinish(nodeid):
    with open("times.txt", "a") as handle:
        handle.write(f"finished {nodeid.split('::')[-1].split('[')[0]} {time.time()!r} -\\n")
"""


def job_started(basetemp, spec):
    """When the simulator job of `spec` began: its job.json is written before the worker starts."""
    return (job_dirs(basetemp, spec)["2.5.0"] / "job.json").stat().st_mtime


def test_with_two_jobs_the_second_specs_job_starts_before_the_first_item_finishes(run_pytest, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "a", "model: cnn.onnx\n")
    write_spec(pytester.path, "b", "model: cnn.onnx\ninputs: {images: {random: [0, 255], seed: 5}}\n")
    pytester.makepyfile(rknn_times=TIMES)
    events = {}
    for jobs in (1, 2):
        result, basetemp = run_pytest("-p", "rknn_times", f"--rknn-jobs={jobs}", NO_RESULT_CACHE, "a.rknn.yaml",
                                      "b.rknn.yaml")
        result.assert_outcomes(passed=2)
        lines = (pytester.path / "times.txt").read_text().split("\n")
        (pytester.path / "times.txt").unlink()
        events[jobs] = {(kind, spec): (float(when), thread)
                        for kind, spec, when, thread in (line.split() for line in lines if line)}
        events[jobs]["started", "b"] = (job_started(basetemp, "b"), "-")
    # Two jobs: b's job started before a's item finished, on a pool thread. (a's job is computed by
    # whichever thread asks first: the pool's, or the item's own when it gets there before the pool.)
    two = events[2]
    assert two["started", "b"][0] < two["finished", "a"][0]
    assert two["built", "b"][1].startswith("rknn-job")
    # One job: today's order, nothing runs ahead; the item's own thread builds.
    one = events[1]
    assert one["finished", "a"][0] < one["built", "b"][0]
    assert one["built", "a"][1] == one["built", "b"][1] == "MainThread"


XDIST_TIMES = """
import os, threading

def pytest_rknn_artifact_built(spec, version, rknn_path, sha256):
    with open("xdist-times.txt", "a") as handle:
        handle.write(f"built {spec.name} {os.getpid()} {threading.current_thread().name}\\n")

def pytest_runtest_teardown(item):  # in the xdist worker that ran the item
    with open("xdist-times.txt", "a") as handle:
        handle.write(f"ran {item.name.split('[')[0]} {os.getpid()} -\\n")
"""


def test_under_xdist_each_worker_runs_ahead_only_the_jobs_of_its_own_items(run_pytest, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    for name in ("a", "b", "c", "d"):
        write_spec(pytester.path, name, "model: cnn.onnx\n")
    pytester.makepyfile(xdist_times=XDIST_TIMES)
    result, _ = run_pytest("-n", "2", "-p", "xdist_times", "--rknn-jobs=4", NO_RESULT_CACHE)  # 2 threads each
    result.assert_outcomes(passed=4)
    lines = [line.split() for line in (pytester.path / "xdist-times.txt").read_text().splitlines()]
    built = {spec: (pid, thread) for kind, spec, pid, thread in lines if kind == "built"}
    ran = {spec: pid for kind, spec, pid, _ in lines if kind == "ran"}
    assert len([line for line in lines if line[0] == "built"]) == 4  # each job once, in one worker
    for spec in "abcd":
        assert built[spec][0] == ran[spec], spec  # built by the worker that ran its item
    # The next item's job runs ahead on the worker's pool (an item's own job may be built by
    # whichever of its thread and the pool gets there first).
    assert [spec for spec, (_, thread) in built.items() if thread.startswith("rknn-job")], built


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_a_bad_rknn_jobs_value_is_a_usage_error_naming_the_option(run_pytest, pytester, value):
    result, _ = run_pytest(f"--rknn-jobs={value}")
    assert result.ret == 4
    result.stderr.fnmatch_lines([f"*--rknn-jobs: *{value}* is not a *number of jobs*"])
    pytester.makeini(f"[pytest]\nrknn_jobs = {value}\n")
    result, _ = run_pytest()
    assert result.ret == 4
    result.stderr.fnmatch_lines([f"*ini option rknn_jobs: *{value}* is not a *number of jobs*"])


def test_xdist_workers_share_the_threads_and_each_gets_at_least_one():
    assert threads_per_process(8, None) == 8
    assert threads_per_process(8, 2) == 4
    assert threads_per_process(2, 2) == 1
    assert threads_per_process(1, 4) == 1
    assert threads_per_process(3, 2) == 1
    assert xdist_worker_count(SimpleNamespace()) is None  # not inside an xdist worker
    assert xdist_worker_count(SimpleNamespace(workerinput={"workercount": 3})) == 3


def fake_spec(name="s"):
    return SimpleNamespace(name=name, timeout=None, path=f"/{name}.rknn.yaml", config_hash=lambda: "h")


def test_two_threads_asking_for_one_key_share_one_computation_and_its_failure(tmp_path):
    runner = RknnRunner(Provisioner(tmp_path), [ToolkitRequest("2.5.0")], tmp_path)
    calls, both_asked = [], threading.Barrier(2, timeout=10)

    def compute(value):
        calls.append(value)
        time.sleep(0.2)  # long enough for the other thread to arrive while this one computes
        if value == "fail":
            raise RknnError("BUILD", "build() returned -1")
        return value

    for value in ("ok", "fail"):
        cache, answers = {}, []

        def ask():
            both_asked.wait()
            try:
                answers.append(runner._once(cache, ("k",), lambda: compute(value), fake_spec()))
            except RknnError as exc:
                answers.append(exc)

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert calls.count(value) == 1, value
        assert len(answers) == 2 and answers[0] is answers[1], answers
    # The cached failure keeps the traceback of where it was raised.
    failure = answers[0]
    assert "compute" in [frame.name for frame in traceback.extract_tb(failure.__traceback__)]


def test_close_cancels_the_jobs_not_started_and_stops_the_running_ones():
    started, release = [], threading.Event()

    def run_job(spec, version):
        started.append(spec.name)
        release.wait(timeout=10)  # "running" until its worker is stopped

    scheduler = JobScheduler(run_job, threads=2, stop_running=release.set)
    scheduler.submit([(fake_spec(f"s{n}"), "2.5.0") for n in range(6)] + [(fake_spec("s0"), "2.5.0")])
    deadline = time.monotonic() + 10
    while len(started) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    begun = time.monotonic()
    scheduler.close()
    assert time.monotonic() - begun < 5  # no wait for the 10 s timeout: stop_running ended the jobs
    assert sorted(started) == ["s0", "s1"]  # the four others were cancelled, s0 was handed over once
    assert not [t for t in threading.enumerate() if t.name.startswith("rknn-job")]


HANGING_WORKER = """#!/bin/sh
case "$1" in
  */pytest_rknn/toolkit/worker.py)
    sleep 300 &
    echo $! > "$PWD/child.pid"
    wait
    exit 0 ;;
esac
exec {python} "$@"
"""


def test_ctrl_c_with_jobs_running_ahead_kills_their_workers_and_exits(pytester, toolkit_cache, tmp_path):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    for name in ("a", "b", "c"):
        write_spec(pytester.path, name, "model: cnn.onnx\n")
    python = Provisioner(toolkit_cache).python_for(ToolkitRequest("2.5.0"))
    wrapper = pytester.path / "toolkit-python"
    wrapper.write_text(HANGING_WORKER.format(python=shlex.quote(python)))
    wrapper.chmod(0o755)
    basetemp = tmp_path / "basetemp"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={basetemp}",
               f"--rknn-toolkit-cache={toolkit_cache}", f"--rknn-toolkit=2.5.0={wrapper}", "--rknn-jobs=2",
               NO_RESULT_CACHE]
    process = subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list((basetemp / "rknn").glob("*/2.5.0/child.pid"))) < 2:  # a's and b's workers hang
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "the two jobs never started"
            time.sleep(0.1)
        time.sleep(0.5)  # let the child.pid writes finish
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0].decode()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "KeyboardInterrupt" in output, output
    jobs = list((basetemp / "rknn").glob("*/2.5.0"))
    assert len([job for job in jobs if (job / "child.pid").exists()]) == 2  # c was never started
    for job in jobs:
        if (job / "worker.pid").exists():
            assert not alive(int((job / "worker.pid").read_text())), job
            assert not alive(int((job / "child.pid").read_text())), job
