"""Long-lived workers: each imports the toolkit once and runs job after job.

A worker is `python worker.py --serve FD` in a session of its own. The host writes a job folder per
line to its stdin and reads `exit N` from the control pipe FD; the worker's stdout and stderr go to
each job's log.txt. A job that crashes the worker, hangs, or ends without a good result costs that
worker only (its process group is killed); the next job gets a fresh one. Jobs are classified
exactly as for a one-job process (client.classify).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from ..logs import last_step, read_log
from .client import KILL_GRACE_SECONDS, TIMED_OUT, WORKER, classify, clear_job_outputs, kill_group, start_process

MAX_IDLE_PER_PYTHON = 2  # idle workers kept per toolkit Python; each holds about 1 GB after a build


class Worker:
    """One serving worker process of one toolkit Python."""

    def __init__(self, python: str, first_job_dir: Path):
        self.python = python
        replies, reply_end = os.pipe()
        try:
            # Until it runs its first job, the worker writes into that job's log: a Python that cannot
            # even start the worker says so there.
            with open(first_job_dir / "log.txt", "ab") as log:
                self.process = start_process([python, str(WORKER), "--serve", str(reply_end)], first_job_dir, log,
                                             python, stdin=subprocess.PIPE, pass_fds=(reply_end,))
        except BaseException:
            os.close(replies)
            raise
        finally:
            os.close(reply_end)
        self._replies: Optional[int] = replies  # None once closed
        self._unread = b""
        self.jobs = 0  # jobs sent to it so far

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def run_job(self, job_dir: Path, timeout: float) -> Optional[int]:
        """The status a one-job process would have exited with (negative: the signal that killed the
        worker), or TIMED_OUT."""
        deadline = time.monotonic() + timeout
        self.jobs += 1
        (job_dir / "worker.pid").write_text(str(self.pid))
        stdin = self.process.stdin
        assert stdin is not None  # started with stdin=PIPE
        try:
            stdin.write(json.dumps(os.path.abspath(job_dir)).encode() + b"\n")
            stdin.flush()
        except OSError:  # it died before the job reached it
            return self._status_after_death()
        reply = self._read_reply(deadline)
        if reply is None:
            return TIMED_OUT
        if reply == "":
            return self._status_after_death()
        return int(reply.split()[1])

    def _read_reply(self, deadline: float) -> Optional[str]:
        """The worker's next reply line; "" when it closed the pipe (died), None at the deadline."""
        replies = self._replies
        while b"\n" not in self._unread:
            if replies is None:  # killed: its pipe is closed
                return ""
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([replies], [], [], remaining)[0]:
                return None
            chunk = os.read(replies, 4096)
            if not chunk:
                return ""
            self._unread += chunk
        line, self._unread = self._unread.split(b"\n", 1)
        return line.decode()

    def _status_after_death(self) -> Optional[int]:
        try:
            return self.process.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:  # closed its pipe yet still running: as good as hung
            return TIMED_OUT

    def kill_strays(self) -> None:
        """Kill whatever the job left running in the worker's process group, all but the worker itself:
        nothing the toolkit started may outlive its job."""
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        strays = self._strays()
        while strays and time.monotonic() < deadline:
            for pid in strays:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)
            strays = self._strays()

    def _strays(self) -> List[int]:
        return [pid for pid in running_in_group(self.pid) if pid != self.pid]

    def kill(self) -> None:
        """The worker and everything in its process group; its pipes closed. Only by the thread that
        holds the worker (another thread uses kill_group: the holder then sees the worker die)."""
        kill_group(self.process)
        try:
            if self.process.stdin is not None:  # it is: started with stdin=PIPE
                self.process.stdin.close()
        except OSError:
            pass
        if self._replies is not None:
            os.close(self._replies)
            self._replies = None


def running_in_group(pgid: int) -> List[int]:
    """The processes of a process group, zombies left out."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            found.append(int(entry))
    return found


class WorkerPool:
    """Serving workers keyed by toolkit Python; safe to use from several threads at once (one busy worker
    per running job, at most `max_idle_per_python` idle ones kept)."""

    def __init__(self, max_idle_per_python: int = MAX_IDLE_PER_PYTHON):
        self.max_idle_per_python = max_idle_per_python
        self._lock = threading.Lock()
        self._idle: Dict[str, List[Worker]] = {}
        self._busy: Set[Worker] = set()

    def run(self, python: str, job_dir: Path, timeout: float, what: str) -> dict:
        """Run one job on an idle worker of `python`, or a fresh one; result.json, or RknnError with the class
        (see client.run_worker)."""
        clear_job_outputs(job_dir)
        worker, status = self._run_on_a_worker(python, job_dir, timeout)
        if worker.jobs > 1 and status not in (0, TIMED_OUT) and _never_started(job_dir):
            # An idle worker died (the OOM killer, say) as the job reached it: not this job's fault.
            worker, status = self._run_on_a_worker(python, job_dir, timeout)
        return classify(job_dir, what, status, timeout)

    def close(self) -> None:
        """Kill every worker, idle or busy (a busy one's job ends as CRASH). The pool stays usable: a later
        job starts a fresh worker."""
        with self._lock:
            idle = [w for workers in self._idle.values() for w in workers]
            busy = list(self._busy)
            self._idle.clear()
        for worker in idle:
            worker.kill()
        for worker in busy:
            kill_group(worker.process)  # its thread sees it die and lets it go

    def worker_pids(self) -> List[int]:
        with self._lock:
            return [w.pid for idle in self._idle.values() for w in idle] + [w.pid for w in self._busy]

    def _run_on_a_worker(self, python: str, job_dir: Path, timeout: float) -> Tuple[Worker, Optional[int]]:
        (job_dir / "log.txt").write_bytes(b"")
        worker = self._take(python, job_dir)
        healthy = False
        try:
            status = worker.run_job(job_dir, timeout)
            healthy = status == 0 and _result_status(job_dir) == "ok"
        finally:
            self._give_back(worker, healthy)
        return worker, status

    def _take(self, python: str, job_dir: Path) -> Worker:
        dead = []
        with self._lock:
            idle = self._idle.get(python, [])
            while idle:
                worker = idle.pop()
                if worker.alive():
                    self._busy.add(worker)
                    return worker
                dead.append(worker)
        for worker in dead:
            worker.kill()
        worker = Worker(python, job_dir)
        with self._lock:
            self._busy.add(worker)
        return worker

    def _give_back(self, worker: Worker, healthy: bool) -> None:
        """Keep a worker whose job ended well, unless enough are idle; kill any other."""
        if healthy:
            worker.kill_strays()
        with self._lock:
            self._busy.discard(worker)
            idle = self._idle.setdefault(worker.python, [])
            keep = healthy and len(idle) < self.max_idle_per_python
            if keep:
                idle.append(worker)
        if not keep:
            worker.kill()


def _never_started(job_dir: Path) -> bool:
    return last_step(read_log(job_dir)) == "start"


def _result_status(job_dir: Path) -> Optional[str]:
    try:
        return json.loads((job_dir / "result.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


SESSION_POOL = WorkerPool()
atexit.register(SESSION_POOL.close)  # a safety net: the runner closes the pool at the end of the session
