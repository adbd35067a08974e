"""The persistent toolkit worker (toolkit/pool.py): one process per toolkit Python imports rknn once and runs
job after job, with the outputs and the failure classes of a process per job. Real toolkit, real fixtures."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import CHILD_WRAPPER, EXAMPLES, MODELS, alive, job_dirs, write_spec

from pytest_rknn.errors import ENV, TIMEOUT, RknnError
from pytest_rknn.toolkit import client
from pytest_rknn.toolkit.envs import Provisioner, ToolkitRequest
from pytest_rknn.toolkit.pool import WorkerPool

WHAT = "rknn-toolkit2 2.5.0"
EXAMPLE_SPECS = sorted(p.name[: -len(".rknn.yaml")] for p in EXAMPLES.glob("*.rknn.yaml"))


@pytest.fixture(scope="module")
def toolkit_python(toolkit_cache):
    return Provisioner(toolkit_cache).python_for(ToolkitRequest("2.5.0"))


@pytest.fixture(scope="module")
def example_run(tmp_path_factory, toolkit_cache):
    """The example suite, run once as a user would, every job in turn (--rknn-jobs=1) so one worker serves
    them all; outputs kept, no result cache. Returns the basetemp."""
    basetemp = tmp_path_factory.mktemp("examples")
    done = subprocess.run([sys.executable, "-m", "pytest", str(EXAMPLES), "-p", "no:cacheprovider",
                           f"--basetemp={basetemp}", f"--rknn-toolkit-cache={toolkit_cache}", "--rknn-jobs=1",
                           "--rknn-no-cache", "--rknn-keep-outputs"],
                          capture_output=True, text=True, timeout=900, cwd=basetemp.parent)
    assert done.returncode == 0, done.stdout[-4000:]
    return basetemp


def served_job(example_run, spec):
    return job_dirs(example_run, spec)["2.5.0"]


def copy_job(example_run, spec, folder):
    """A fresh job folder with the same job.json and inputs.npz as the example run's job of `spec`."""
    job = folder / spec
    shutil.copytree(served_job(example_run, spec), job)
    for produced in ("result.json", "outputs.npz", "log.txt", "worker.pid", f"{spec}.rknn"):
        (job / produced).unlink(missing_ok=True)
    return job


def result_of(job):
    return json.loads((job / "result.json").read_text())


def worker_pid(job):
    return int((job / "worker.pid").read_text())


def test_one_worker_imports_the_toolkit_once_and_serves_the_whole_suite(example_run):
    jobs = {spec: served_job(example_run, spec) for spec in EXAMPLE_SPECS}
    assert len({worker_pid(job) for job in jobs.values()}) == 1, "one worker for every job of the version"
    imports = sorted(result_of(job)["timings"]["import"] for job in jobs.values())
    assert imports[-1] > 1.0 and all(seconds < 0.5 for seconds in imports[:-1]), imports  # the first job pays it
    for spec, job in jobs.items():
        log = (job / "log.txt").read_text()
        # Each job's log holds that job and no other: one import mark, the toolkit's own lines, its model.
        assert log.count("[pytest-rknn] step: import") == 1 and log.count("[pytest-rknn] step: inference") == 1, spec
        assert "rknn-toolkit2 version: 2.5.0" in log and "I rknn building" in log, spec
    assert not any(alive(worker_pid(job)) for job in jobs.values()), "a worker outlived the session"


def test_outputs_are_bit_identical_to_a_process_per_job(example_run, toolkit_python, tmp_path):
    for spec in ("cnn_int8", "two_input", "yolov5_heads_int8"):
        served = served_job(example_run, spec)
        assert result_of(served)["timings"]["import"] < 0.5, f"{spec}: not run by a worker that ran jobs before"
        alone = copy_job(example_run, spec, tmp_path)
        assert client.run_worker_once(toolkit_python, alone, 600, WHAT)["status"] == "ok"
        with np.load(served / "outputs.npz") as pooled, np.load(alone / "outputs.npz") as single:
            assert pooled.files and sorted(pooled.files) == sorted(single.files), spec
            for key in pooled.files:
                assert pooled[key].dtype == single[key].dtype, (spec, key)
                assert np.array_equal(pooled[key], single[key]), f"{spec} {key}: outputs differ"


def test_a_crash_costs_its_worker_only_and_the_next_job_gets_a_fresh_one(run_pytest, pytester):
    for model in ("cnn", "conv_abort", "resize_segv"):
        shutil.copy(MODELS / f"{model}.onnx", pytester.path / f"{model}.onnx")
    names = {"a_good": "cnn", "b_abort": "conv_abort", "c_good": "cnn", "d_segv": "resize_segv", "e_good": "cnn"}
    for name, model in names.items():
        write_spec(pytester.path, name, f"model: {model}.onnx\n")
    result, basetemp = run_pytest(str(pytester.path), "--rknn-jobs=1", "--rknn-no-cache")
    result.assert_outcomes(passed=3, failed=2)
    out = result.stdout.str()
    assert "[CRASH] b_abort[2.5.0-sim]: rknn-toolkit2 2.5.0: worker killed by SIGABRT during build: " \
           "E RKNN: Failed to config layer: 'Conv:y', Fatal Error" in out
    assert "[CRASH] d_segv[2.5.0-sim]: rknn-toolkit2 2.5.0: worker killed by SIGSEGV during build " \
           "(the toolkit logged no error line; see the log tail)" in out
    jobs = {name: job_dirs(basetemp, name)["2.5.0"] for name in names}
    pids = {name: worker_pid(job) for name, job in jobs.items()}
    # Each crash happened on the worker that had served the job before, mid-session...
    assert pids["a_good"] == pids["b_abort"] and pids["c_good"] == pids["d_segv"]
    # ...and the next job ran on a fresh worker, which imported the toolkit again.
    assert len({pids["b_abort"], pids["d_segv"], pids["e_good"]}) == 3
    assert all(result_of(jobs[name])["timings"]["import"] > 1.0 for name in ("a_good", "c_good", "e_good"))
    assert not any(alive(pid) for pid in pids.values()), "a worker outlived the session"


def test_a_timeout_kills_its_worker_only(example_run, toolkit_python, tmp_path):
    pool = WorkerPool()
    slow, hung = copy_job(example_run, "yolov5_heads_int8", tmp_path), copy_job(example_run, "cnn", tmp_path)
    finished = {}
    other = threading.Thread(target=lambda: finished.update(result=pool.run(toolkit_python, slow, 600, WHAT)))
    try:
        other.start()
        # A fresh worker, since the other one is busy: 1 s is not even enough to import the toolkit.
        with pytest.raises(RknnError) as failure:
            pool.run(toolkit_python, hung, 1, WHAT)
        assert failure.value.failure_class == TIMEOUT
        assert re.match(r"rknn-toolkit2 2\.5\.0: no result after 1 s, during import; worker process group killed",
                        failure.value.message)
        assert not alive(worker_pid(hung)) and alive(worker_pid(slow))  # the other job goes on
        other.join(timeout=600)
        assert finished["result"]["status"] == "ok" and pool.worker_pids() == [worker_pid(slow)]
    finally:
        other.join(timeout=600)
        pool.close()
    assert not alive(worker_pid(slow)) and pool.worker_pids() == []


def test_a_python_without_the_toolkit_is_env_and_its_worker_is_not_kept(example_run, tmp_path):
    pool = WorkerPool()
    job = copy_job(example_run, "cnn", tmp_path)
    try:
        with pytest.raises(RknnError) as failure:
            pool.run(sys.executable, job, 60, WHAT)  # pytest's own Python: numpy, no rknn
    finally:
        pool.close()
    assert failure.value.failure_class == ENV
    assert re.match(r"rknn-toolkit2 2\.5\.0: the toolkit environment cannot import rknn: ModuleNotFoundError: "
                    r"No module named 'rknn'", failure.value.message)
    assert "Traceback" in (job / "log.txt").read_text()  # the import failure is in that job's log
    assert not alive(worker_pid(job))


def test_what_a_job_leaves_in_the_workers_group_dies_with_the_job_and_a_dead_idle_worker_is_replaced(
        example_run, toolkit_python, tmp_path):
    wrapper = tmp_path / "toolkit-python"
    wrapper.write_text(CHILD_WRAPPER.format(python=shlex.quote(toolkit_python)))
    wrapper.chmod(0o755)
    pool = WorkerPool()
    first, second = copy_job(example_run, "cnn", tmp_path / "1"), copy_job(example_run, "cnn", tmp_path / "2")
    child = None
    try:
        assert pool.run(str(wrapper), first, 600, WHAT)["status"] == "ok"
        child = int((first / "child.pid").read_text())
        assert not alive(child) and pool.worker_pids() == [worker_pid(first)]
        os.kill(worker_pid(first), signal.SIGKILL)  # dies while idle: the next job must not pay for it
        assert pool.run(str(wrapper), second, 600, WHAT)["status"] == "ok"
        assert worker_pid(second) != worker_pid(first)
    finally:
        pool.close()
        if child and alive(child):
            os.kill(child, signal.SIGKILL)
    assert not alive(worker_pid(second))
