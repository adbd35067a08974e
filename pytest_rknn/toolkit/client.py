"""Start the worker in a toolkit environment through a job directory, and classify how it ended."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import List

from ..errors import BUILD, CRASH, ENV, TIMEOUT, RknnError
from ..logs import error_lines, last_step, log_tail, read_log, signal_name

WORKER = Path(__file__).with_name("worker.py")
KILL_GRACE_SECONDS = 5.0


def run_worker(python: str, job_dir: Path, timeout: float, what: str) -> dict:
    """Run the worker to completion; return result.json, or raise RknnError with the class.
    A result with status SPEC (a convert key the installed toolkit does not know) is returned.

    `what` names the job in messages, e.g. "rknn-toolkit2 2.5.0".
    """
    for stale in ("result.json", "outputs.npz"):
        (job_dir / stale).unlink(missing_ok=True)
    with open(job_dir / "log.txt", "wb") as log:
        try:
            process = subprocess.Popen([python, str(WORKER), str(job_dir)], stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True, cwd=job_dir)
        except OSError as exc:
            raise RknnError(ENV, f"cannot start the toolkit Python {python}: {exc.strerror}") from None
        (job_dir / "worker.pid").write_text(str(process.pid))
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            lines = read_log(job_dir)
            raise RknnError(TIMEOUT, f"{what}: no result after {timeout:g} s, during {last_step(lines)}; "
                                     f"worker process group killed (raise --rknn-timeout or the spec's `timeout:`)",
                            log_tail(lines)) from None
        finally:
            _kill_group(process)  # nothing the toolkit started may outlive the job
    lines = read_log(job_dir)
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


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.05)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
