"""A board: the simulator's exact `.rknn`, with the same inputs, in rknn-toolkit-lite2 over SSH."""

from __future__ import annotations

import time

from ..board.preflight import check_target
from ..board.session import BoardPool
from ..errors import RknnError
from ..result import MOVED
from ..jobdir import read_outputs, write_job
from ..logs import read_log
from . import Executed, Job

BOARD = "board"


class BoardBackend:
    name = BOARD

    def __init__(self, pool: BoardPool):
        self.pool = pool

    def __bool__(self) -> bool:
        return bool(self.pool)

    def run(self, job: Job) -> Executed:
        started = time.monotonic()
        simulated = job.artifact
        assert simulated is not None and simulated.job_dir is not None and job.version is not None  # a board job
        key = f"{job.spec.name}/{job.version}"
        session, passed_over = self.pool.start_for(key)
        job_dir = simulated.job_dir.parent / f"{job.version}-board"
        write_job(job_dir, {"latency_runs": job.spec.checks.latency.runs}, job.inputs)
        try:
            check_target(session.start(), job.spec.target)  # started: start() only returns its BoardInfo
            result = session.run_job(job_dir, simulated.rknn_path, simulated.result["rknn_sha256"], job.version)
        except RknnError as exc:
            if not session.gone:
                raise
            # The board went away during this job and did not come back: the job once more, on the next one.
            gone = session
            session, more = self.pool.start_for(key)
            passed_over = [line for line in more if not line.startswith(f"board {gone.address} ")]
            passed_over.append(f"board {gone.address} went away during the job ({exc.message})")
            check_target(session.start(), job.spec.target)  # started: start() only returns its BoardInfo
            result = session.run_job(job_dir, simulated.rknn_path, simulated.result["rknn_sha256"], job.version)
        result["board"] = session.start().fingerprint()
        if passed_over:
            result.setdefault("warnings", []).append(f"{MOVED}{session.address} instead: " + "; ".join(passed_over))
        outputs = read_outputs(job_dir, len(job.inputs), result.get("failed_samples", []))
        return Executed(BOARD, outputs, job_dir, result, read_log(job_dir), time.monotonic() - started)

    def close(self) -> None:
        self.pool.close()
