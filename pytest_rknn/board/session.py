"""One board for the whole pytest session: connect once, a private work dir, the runner
uploaded once, one remote process per job, and everything removed at the end."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import ENV, RknnError
from ..logs import read_log
from .classify import classify
from .connection import BoardAddress, SshConnection, SshSettings
from .preflight import BoardInfo, parse_preflight

RUNNER = Path(__file__).with_name("remote_runner.py")
CORE_MASKS = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
              "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2", "all": "NPU_CORE_ALL"}
SSH_GRACE_SECONDS = 30.0  # past the board's own job timeout, before the host gives up on the channel


def q(path: str) -> str:
    return shlex.quote(path)


class BoardSession:
    def __init__(self, address: BoardAddress, settings: SshSettings, python: str = "python3",
                 workdir_parent: str = "/tmp", core_mask: str = "auto", timeout: float = 300.0):
        self.address = address
        self.connection = SshConnection(address, settings)
        self.python = " ".join(q(part) for part in shlex.split(python))
        self.workdir_parent = workdir_parent
        self.core_mask = CORE_MASKS[core_mask]
        self.timeout = timeout
        self.info: Optional[BoardInfo] = None
        self.workdir: Optional[str] = None
        self._error: Optional[RknnError] = None
        self._jobs = 0

    @property
    def where(self) -> str:
        return f"board {self.address}"

    def start(self) -> BoardInfo:
        """Connect and preflight once; a failure is remembered so every item fails fast with it."""
        if self._error is not None:
            raise self._error
        if self.info is None:
            try:
                self.connection.open()
                made = self.connection.run(f"umask 077 && mktemp -d {q(self.workdir_parent)}/pytest-rknn.XXXXXXXX",
                                           timeout=self.connection.settings.connect_timeout)
                if made.status != 0:
                    raise RknnError(ENV, f"{self.where}: cannot make a work dir in {self.workdir_parent}: "
                                         f"{made.stderr.strip()} (set --rknn-board-workdir)")
                self.workdir = made.stdout.strip()
                self.connection.put(RUNNER, f"{self.workdir}/runner.py")
                answer = self.connection.run(f"{self.python} {q(self.workdir + '/runner.py')} preflight", timeout=60)
                if answer.status != 0:
                    raise RknnError(ENV, f"{self.where}: {self.python} cannot run the preflight: "
                                         f"{(answer.stderr.strip().splitlines() or ['exit ' + str(answer.status)])[-1]} "
                                         f"(check --rknn-board-python)")
                self.info = parse_preflight(str(self.address), answer.stdout)
            except RknnError as exc:
                self._error = exc
                self.close()
                raise
        return self.info

    def run_job(self, local_dir: Path, rknn_path: Path, rknn_sha256: str, toolkit_version: str) -> dict:
        """Run one job whose job.json and inputs.npz are in `local_dir`; the board's
        result.json, outputs.npz and log.txt are copied back there. Raises RknnError."""
        self.start()
        self._jobs += 1
        remote = f"{self.workdir}/job-{self._jobs}"
        job = json.loads((local_dir / "job.json").read_text())
        job.update(rknn_name=rknn_path.name, rknn_sha256=rknn_sha256, core_mask=self.core_mask)
        (local_dir / "job.json").write_text(json.dumps(job, indent=1))
        sftp = self.connection.sftp
        sftp.mkdir(remote, 0o700)
        for local, name in ((local_dir / "job.json", "job.json"), (local_dir / "inputs.npz", "inputs.npz"),
                            (rknn_path, rknn_path.name)):
            self.connection.put(local, f"{remote}/{name}")
        command = f"cd {q(remote)} && {self.python} {q(self.workdir + '/runner.py')} run {q(remote)} {self.timeout:g}"
        answer = self.connection.run(command, timeout=self.timeout + SSH_GRACE_SECONDS)
        for name in ("result.json", "outputs.npz", "log.txt"):
            (local_dir / name).unlink(missing_ok=True)
            self.connection.get(f"{remote}/{name}", local_dir / name)
        self.connection.remove_tree(remote)
        if not (local_dir / "result.json").is_file():
            raise RknnError(ENV, f"{self.where}: the runner left no result (exit {answer.status}): "
                                 f"{answer.stderr.strip()[-300:]}")
        return classify(self.where, self.info, json.loads((local_dir / "result.json").read_text()),
                        read_log(local_dir), toolkit_version)

    def close(self) -> None:
        """Kill what is still running in our work dir, remove it, disconnect. Safe to call twice."""
        if self.connection.client is not None and self.workdir:
            work = q(self.workdir)
            try:
                # The supervisor first, so nothing writes into the folder while it is removed.
                self.connection.run(f'for d in {work}/job-*; do '
                                    f'[ -f "$d/supervisor.pid" ] && kill -KILL "$(cat "$d/supervisor.pid")"; '
                                    f'[ -f "$d/pgid" ] && kill -KILL -- "-$(cat "$d/pgid")"; '
                                    f'done 2>/dev/null; rm -rf -- {work}', timeout=60)
            except (RknnError, OSError):
                pass  # the board went away; nothing more we can do from here
        self.workdir = None
        self.connection.close()


class BoardPool:
    """The boards of --rknn-board; each (spec, version) goes to one of them, the same one
    in every process (so pytest-xdist workers agree)."""

    def __init__(self, addresses: List[BoardAddress], make_session):
        self.addresses = addresses
        self._make_session = make_session
        self._sessions: Dict[BoardAddress, BoardSession] = {}

    def __bool__(self) -> bool:
        return bool(self.addresses)

    def session_for(self, key: str) -> BoardSession:
        import zlib

        address = self.addresses[zlib.crc32(key.encode()) % len(self.addresses)]
        if address not in self._sessions:
            self._sessions[address] = self._make_session(address)
        return self._sessions[address]

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
