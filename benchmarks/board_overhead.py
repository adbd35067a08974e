"""Per-input overhead of the board path (SSH + SFTP + remote runner) against running the
same runner directly, on the loopback test board, for 1 and for 100 inputs.

    .venv/bin/python benchmarks/board_overhead.py [--repeat 3]

Both sides run the same remote_runner.py with the same job, the same board Python and
the same rknnlite test double; the difference is what the board path adds: uploading the
job and the .rknn, one SSH command, downloading the outputs, removing the job dir.
Connecting and the preflight happen once per session and are reported separately.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from board.testboard import start_test_board  # noqa: E402  (the project's loopback test board)

from pytest_rknn.board.connection import BoardAddress, SshSettings  # noqa: E402
from pytest_rknn.board.session import RUNNER, BoardSession  # noqa: E402
from pytest_rknn.inputs import InputSet  # noqa: E402
from pytest_rknn.jobdir import write_job  # noqa: E402
from pytest_rknn.runner import RknnRunner  # noqa: E402
from pytest_rknn.spec import spec_from_dict  # noqa: E402
from pytest_rknn.toolkit.envs import Provisioner, ToolkitRequest, default_cache_dir  # noqa: E402

VERSION = "2.5.0"
COUNTS = (1, 100)


def build_artifact(work: Path):
    """Build the fixture CNN once with the real toolkit; return its spec, inputs and .rknn."""
    spec = spec_from_dict({"model": str(ROOT / "fixtures/models/cnn.onnx"),
                           "inputs": {"images": {"random": [0, 255], "count": max(COUNTS)}},
                           "convert": {"mean_values": [[0, 0, 0]], "std_values": [[255, 255, 255]]}})
    runner = RknnRunner(Provisioner(default_cache_dir()), [ToolkitRequest(VERSION)], work)
    staged = runner.stage(spec)
    simulated = runner.simulate(spec, staged, VERSION)
    return spec, staged.inputs, simulated.rknn_path, simulated.result["rknn_sha256"]


def subset(inputs: InputSet, count: int) -> InputSet:
    return InputSet(inputs.names, inputs.layouts, inputs.samples[:count], inputs.labels[:count])


def time_direct(board, job_dir: Path, rknn: Path, sha: str) -> float:
    """The runner started locally, exactly as the board path starts it remotely."""
    import json

    job = json.loads((job_dir / "job.json").read_text())
    job.update(rknn_name=rknn.name, rknn_sha256=sha, core_mask="NPU_CORE_AUTO")
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder)
        (run_dir / "job.json").write_text(json.dumps(job))
        shutil.copy(job_dir / "inputs.npz", run_dir / "inputs.npz")
        shutil.copy(rknn, run_dir / rknn.name)
        shutil.copy(RUNNER, run_dir / "runner.py")
        started = time.perf_counter()
        subprocess.run([str(board.python), str(run_dir / "runner.py"), "run", str(run_dir), "300"], check=True)
        elapsed = time.perf_counter() - started
        assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        board = start_test_board(work / "board")
        try:
            spec, inputs, rknn, sha = build_artifact(work / "build")
            board.register(sha, str(spec.model_path), spec.convert.mean_values, spec.convert.std_values, True, VERSION)
            # Verify the test board's host key like any board: a known_hosts in a private HOME.
            os.environ["HOME"] = str(work)
            (work / ".ssh").mkdir()
            (work / ".ssh" / "known_hosts").write_text(board.host_key_line + "\n")
            session = BoardSession(BoardAddress(board.host, board.port), SshSettings(key_path=str(board.key_path)),
                                   python=str(board.python), workdir_parent=str(work))
            started = time.perf_counter()
            session.start()
            print(f"connect + upload runner + preflight (once per session): {time.perf_counter() - started:.3f} s")
            print(f"{'inputs':>6}  {'direct s':>9}  {'board s':>9}  {'board/direct':>12}  {'overhead/input ms':>17}")
            for count in COUNTS:
                job_dir = work / f"job-{count}"
                write_job(job_dir, {}, subset(inputs, count))
                direct = statistics.median(time_direct(board, job_dir, rknn, sha) for _ in range(args.repeat))
                remote = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    result = session.run_job(job_dir, rknn, sha, VERSION)
                    remote.append(time.perf_counter() - started)
                    assert result["status"] == "ok" and not result["failed_samples"]
                board_s = statistics.median(remote)
                print(f"{count:>6}  {direct:>9.3f}  {board_s:>9.3f}  {board_s / direct:>12.2f}  "
                      f"{(board_s - direct) / count * 1000:>17.2f}")
            session.close()
        finally:
            board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
