"""Run the worker in a toolkit environment through a job directory, and classify how it ended.

`run_worker` hands the job to a long-lived worker of the session's pool (pool.py), which imports the
toolkit once and runs job after job; `run_worker_once` starts a process for one job only, as before.
Both end the same way: result.json, or an RknnError with the class.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import List, Optional

from ..errors import BUILD, CRASH, ENV, TIMEOUT, RknnError
from ..atomic import write_atomic
from ..logs import error_lines, last_step, log_tail, read_log, signal_name
from .build_log import settle

WORKER = Path(__file__).with_name("worker.py")
ANALYSIS_TABLE = "toolkit/error_analysis.txt"  # what an analysis job's result.json names (worker.ANALYSIS_DIR)
KILL_GRACE_SECONDS = 5.0
TIMED_OUT = None  # the exit status of a job that did not end in time


def run_worker(python: str, job_dir: Path, timeout: float, what: str) -> dict:
    """Run the job on a worker of the session's pool; return result.json, or raise RknnError with the class.
    A result with status SPEC (a convert key the installed toolkit does not know) is returned.

    `what` names the job in messages, e.g. "rknn-toolkit2 2.5.0".
    """
    from .pool import SESSION_POOL  # pool.py builds on this module's classification

    return SESSION_POOL.run(python, job_dir, timeout, what)


def close_workers() -> None:
    """End of session: kill every worker of the session's pool."""
    from .pool import SESSION_POOL

    SESSION_POOL.close()


def run_worker_once(python: str, job_dir: Path, timeout: float, what: str) -> dict:
    """Like run_worker, in a process started for this job alone (`python worker.py JOB_DIR`)."""
    clear_job_outputs(job_dir)
    with open(job_dir / "log.txt", "wb") as log:
        process = start_process([python, str(WORKER), str(job_dir)], job_dir, log, python)
        (job_dir / "worker.pid").write_text(str(process.pid))
        returncode: Optional[int]
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = TIMED_OUT
        finally:
            kill_group(process)  # nothing the toolkit started may outlive the job
    return classify(job_dir, what, returncode, timeout)


def clear_job_outputs(job_dir: Path) -> None:
    for stale in ("result.json", "outputs.npz"):
        (job_dir / stale).unlink(missing_ok=True)


def start_process(command: List[str], job_dir: Path, log, python: str, stdin=subprocess.DEVNULL,
                  pass_fds=()) -> subprocess.Popen:
    """A worker process in a session of its own (so its whole group can be killed), output into `log`."""
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=stdin, pass_fds=pass_fds,
                                start_new_session=True, cwd=job_dir)
    except OSError as exc:
        raise RknnError(ENV, f"cannot start the toolkit Python {python}: {exc.strerror}") from None


def classify(job_dir: Path, what: str, returncode: Optional[int], timeout: float) -> dict:
    """How a job ended, from its exit status (TIMED_OUT, negative for a signal) and its job folder.
    A finished job's result.json gets the build's layer table (`layers`, see build_log.py)."""
    layers = settle(job_dir)
    lines = read_log(job_dir)
    if returncode is TIMED_OUT:
        raise RknnError(TIMEOUT, f"{what}: no result after {timeout:g} s, during {last_step(lines)}; "
                                 f"worker process group killed (raise --rknn-timeout or the spec's `timeout:`)",
                        log_tail(lines))
    errors = error_lines(lines)
    if returncode < 0:
        detail = f": {errors[0]}" if errors else " (the toolkit logged no error line; see the log tail)"
        raise RknnError(CRASH, f"{what}: worker killed by {signal_name(-returncode)} during {last_step(lines)}{detail}",
                        log_tail(lines))
    result_path = job_dir / "result.json"
    if not result_path.is_file():
        return _no_result(what, returncode, lines, errors)
    result = json.loads(result_path.read_text())
    status = result["status"]
    if status == "ok":
        result["layers"] = layers
        write_atomic(result_path, json.dumps(result, indent=1))
    if status == "SPEC":
        return result  # the caller knows the spec file to name
    if status == "BUILD":
        if result.get("exception"):
            raise RknnError(BUILD, f"{what}: {result['step']}() raised {result['exception']}", log_tail(lines))
        detail = "; ".join(errors) if errors else "the toolkit logged no error line, see the log tail"
        raise RknnError(BUILD, f"{what}: {result['step']}() returned -1: {detail}", log_tail(lines))
    return result


def _no_result(what: str, returncode: int, lines: List[str], errors: List[str]):
    # The worker exited without writing a result: an exception escaped the toolkit.
    step = last_step(lines)
    exception = next((l.strip() for l in reversed(lines) if re.match(r"^\w+(\.\w+)*(Error|Exception)\b", l)), "")
    reason = exception or (errors[-1] if errors else f"exit status {returncode}")
    if step in ("start", "import"):
        raise RknnError(ENV, f"{what}: the toolkit environment cannot import rknn: {reason} "
                             f"(delete the environment to provision it again)", log_tail(lines))
    raise RknnError(BUILD, f"{what}: {step} raised {reason}", log_tail(lines))


def kill_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process's group, SIGKILL after a grace period; the process is reaped."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    else:
        _wait_quietly(process, KILL_GRACE_SECONDS)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _wait_quietly(process, KILL_GRACE_SECONDS)


def _wait_quietly(process: subprocess.Popen, seconds: float) -> None:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass
