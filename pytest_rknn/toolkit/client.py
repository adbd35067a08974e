"""Start the worker in a toolkit environment through a job directory, and classify how it ended."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..errors import BUILD, CRASH, ENV, TIMEOUT, RknnError
from ..inputs import InputSet

WORKER = Path(__file__).with_name("worker.py")
STEP_MARK = "[pytest-rknn] step:"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ERROR_LINE = re.compile(r"^E\s")
_GLUED = re.compile(r"(?<=it/s\])(?=[DIWE] )")
_PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+ \[")
_NOISE = re.compile(r"^E\s+(rknn-toolkit2 version:|\w+: Traceback)")
_TIMESTAMP = re.compile(r"\[\d\d:\d\d:\d\d\.\d+\]\s*")
KILL_GRACE_SECONDS = 5.0


def clean_log_lines(text: str) -> List[str]:
    """Log lines without colour codes, blank lines and progress bars. The toolkit glues
    log lines onto the end of a finished bar, with no newline."""
    text = _GLUED.sub("\n", _ANSI.sub("", text))
    lines = []
    for line in text.split("\n"):
        states = [state for state in line.split("\r") if state.strip()]
        if states and not _PROGRESS_BAR.search(states[-1]):
            lines.append(states[-1])
    return lines


def read_log(job_dir: Path) -> List[str]:
    try:
        return clean_log_lines((job_dir / "log.txt").read_text(errors="replace"))
    except OSError:
        return []


def error_lines(lines: List[str], limit: int = 5) -> List[str]:
    """The toolkit's own error lines (`E RKNN: ...`, `E build: ...`), without timestamps
    and without the version banner the toolkit logs as an error."""
    found = []
    for line in lines:
        if _ERROR_LINE.match(line) and not _NOISE.match(line):
            text = _TIMESTAMP.sub("", line.strip())
            if text not in found:
                found.append(text)
    return found[:limit]


def last_step(lines: List[str]) -> str:
    steps = [line.split(STEP_MARK, 1)[1].strip() for line in lines if STEP_MARK in line]
    return steps[-1] if steps else "start"


def log_tail(lines: List[str], count: int = 25) -> str:
    return "\n".join(lines[-count:])


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def write_job(job_dir: Path, job: dict, inputs: InputSet) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    arrays = {f"s{s}_i{i}": array for s, sample in enumerate(inputs.samples) for i, array in enumerate(sample)}
    np.savez(job_dir / "inputs.npz", **arrays)
    job = dict(job, samples=len(inputs), data_format=[layout or "nchw" for layout in inputs.layouts])
    (job_dir / "job.json").write_text(json.dumps(job, indent=1))


def run_worker(python: str, job_dir: Path, timeout: float, what: str) -> dict:
    """Run the worker to completion; return result.json, or raise RknnError with the class.
    A result with status SPEC (a convert key the installed toolkit does not know) is returned.

    `what` names the job in messages, e.g. "cnn with rknn-toolkit2 2.5.0".
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


def read_outputs(job_dir: Path, samples: int, failed: List[int]) -> List[Optional[List[np.ndarray]]]:
    """[sample][output]; None for a sample whose inference() returned None."""
    with np.load(job_dir / "outputs.npz") as data:
        keys = set(data.files)
        outputs = []
        for s in range(samples):
            if s in failed:
                outputs.append(None)
                continue
            k, arrays = 0, []
            while f"s{s}_o{k}" in keys:
                arrays.append(data[f"s{s}_o{k}"])
                k += 1
            outputs.append(arrays)
    return outputs
