"""One board for the whole pytest session: connect once, a private work dir, the runner
uploaded once, one remote process per job, and everything removed at the end. A connection
that drops is reopened once; a board that does not answer again fails its remaining items
at once, and what it still runs is killed and removed when it is back, at the latest at the end."""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import CRASH, ENV, RknnError, RknnWarning
from ..logs import last_step, log_tail, read_log, signal_name
from .classify import classify
from .connection import BoardAddress, CommandResult, ConnectionLost, SshConnection, SshSettings, last_line
from .preflight import BoardInfo, parse_preflight

RUNNER = Path(__file__).with_name("remote_runner.py")
CORE_MASKS = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
              "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2", "all": "NPU_CORE_ALL"}
SSH_GRACE_SECONDS = 30.0  # past the board's own job timeout, before the host gives up on the channel
CLEAN_UP_SECONDS = 60.0


def q(path: str) -> str:
    return shlex.quote(path)


def core_mask_constant(name: str) -> str:
    """`0_1` -> `NPU_CORE_0_1`; an RknnError naming --rknn-core-mask for anything else."""
    if name not in CORE_MASKS:
        raise RknnError(ENV, f"--rknn-core-mask: '{name}' is not one of {', '.join(CORE_MASKS)}")
    return CORE_MASKS[name]


def kill_and_remove(jobs: str, folder: str) -> str:
    """A shell command: kill the supervisor, then the process group, of every job folder in
    `jobs` (quoted paths or a glob), so nothing writes into `folder` while it is removed."""
    return (f'for d in {jobs}; do '
            f'[ -f "$d/supervisor.pid" ] && kill -KILL "$(cat "$d/supervisor.pid")"; '
            f'[ -f "$d/pgid" ] && kill -KILL -- "-$(cat "$d/pgid")"; '
            f'done 2>/dev/null; rm -rf -- {folder}')


class BoardSession:
    def __init__(self, address: BoardAddress, settings: SshSettings, python: str = "python3",
                 workdir_parent: str = "/tmp", core_mask: str = "auto", timeout: float = 300.0):
        self.address = address
        self.connection = SshConnection(address, settings)
        self.python = " ".join(q(part) for part in shlex.split(python))
        self.workdir_parent = workdir_parent
        self.core_mask = core_mask_constant(core_mask)
        self.timeout = timeout
        self.info: Optional[BoardInfo] = None
        self.workdir: Optional[str] = None
        self._workdirs: List[str] = []  # made on the board and not removed yet
        self._error: Optional[RknnError] = None
        self._jobs = 0

    @property
    def where(self) -> str:
        return f"board {self.address}"

    @property
    def gone(self) -> bool:
        """It could not be reached, or went away and did not come back: its items fail at once."""
        return self._error is not None

    def start(self) -> BoardInfo:
        """Connect and preflight once; a failure is remembered so every item fails fast with it."""
        if self._error is not None:
            raise self._error
        if self.info is None:
            try:
                self.connection.open()
                self._set_up()
            except RknnError as exc:
                self._error = exc
                self.close()
                raise
            except BaseException:  # a bug of ours, or Ctrl-C: leave nothing behind either way
                self.close()
                raise
        assert self.info is not None  # set by _set_up
        return self.info

    def _set_up(self) -> None:
        """A private work dir with the runner in it, and the preflight."""
        made = self.connection.run(f"umask 077 && mktemp -d {q(self.workdir_parent)}/pytest-rknn.XXXXXXXX",
                                   timeout=self.connection.settings.connect_timeout, doing="making the work dir")
        if made.status != 0:
            raise RknnError(ENV, f"{self.where}: cannot make a work dir in {self.workdir_parent}: "
                                 f"{made.stderr.strip()} (set --rknn-board-workdir)")
        self.workdir = made.stdout.strip()
        self._workdirs.append(self.workdir)
        self.connection.put(RUNNER, f"{self.workdir}/runner.py")
        answer = self.connection.run(f"{self.python} {q(self.workdir + '/runner.py')} preflight", timeout=60,
                                     doing="the preflight")
        if answer.status != 0:
            raise RknnError(ENV, f"{self.where}: {self.python} cannot run the preflight: "
                                 f"{(answer.stderr.strip().splitlines() or ['exit ' + str(answer.status)])[-1]} "
                                 f"(check --rknn-board-python)")
        self.info = parse_preflight(str(self.address), answer.stdout)

    def run_job(self, local_dir: Path, rknn_path: Path, rknn_sha256: str, toolkit_version: str) -> dict:
        """Run one job whose job.json and inputs.npz are in `local_dir`; the board's
        result.json, outputs.npz and log.txt are copied back there. Raises RknnError.
        When the connection drops, it is reopened once and the job runs once more."""
        self.start()
        job = json.loads((local_dir / "job.json").read_text())
        job.update(rknn_name=rknn_path.name, rknn_sha256=rknn_sha256, core_mask=self.core_mask)
        (local_dir / "job.json").write_text(json.dumps(job, indent=1))
        try:
            return self._run_job(local_dir, rknn_path, toolkit_version)
        except ConnectionLost as exc:
            lost = exc
        self._reconnect(lost)
        try:
            result = self._run_job(local_dir, rknn_path, toolkit_version)
        except ConnectionLost as again:
            self._reconnect(again)
            raise RknnError(ENV, f"{again.message}, a second time for this job, so it is not run again (does the "
                                 f"job take the board's network down? see the board's kernel log)") from None
        result.setdefault("warnings", []).append(f"{lost.message}; reconnected and ran the job again")
        return result

    def _run_job(self, local_dir: Path, rknn_path: Path, toolkit_version: str) -> dict:
        assert self.workdir is not None and self.info is not None  # run_job starts the session first
        self._jobs += 1
        remote = f"{self.workdir}/job-{self._jobs}"
        made = self.connection.run(f"mkdir -m 700 -- {q(remote)}", timeout=60, doing="making the job dir")
        if made.status != 0:
            raise RknnError(ENV, f"{self.where}: cannot make {remote}: {made.stderr.strip()}")
        try:
            for local in (local_dir / "job.json", local_dir / "inputs.npz", rknn_path):
                self.connection.put(local, f"{remote}/{local.name}")
            # `; exit $?` keeps the shell in between, so a killed runner shows as 128+N, the signal.
            command = (f"cd {q(remote)} && {self.python} {q(self.workdir + '/runner.py')} run {q(remote)} "
                       f"{self.timeout:g}; exit $?")
            answer = self.connection.run(command, timeout=self.timeout + SSH_GRACE_SECONDS, doing="running the job")
            for name in ("result.json", "outputs.npz", "log.txt"):
                self.connection.get(f"{remote}/{name}", local_dir / name)
        finally:
            if self.connection.alive():  # else the reconnect, or the end of the session, removes it
                self.connection.run(kill_and_remove(q(remote), q(remote)), timeout=CLEAN_UP_SECONDS,
                                    doing="removing the job dir")
        try:
            result = json.loads((local_dir / "result.json").read_text())
        except (OSError, ValueError):
            raise self._no_result(answer, read_log(local_dir)) from None
        return classify(self.where, self.info, result, read_log(local_dir), toolkit_version)

    def _no_result(self, answer: CommandResult, lines: List[str]) -> RknnError:
        """The runner's supervisor always writes a result.json; without one, something killed it
        or it could not start. The log.txt the board has, if any, goes with the message."""
        where = f"{self.where}: the runner left no result"
        during = f" during {last_step(lines)}" if lines else ""
        tail = log_tail(lines) or None
        if answer.status == -1 or answer.status > 128:  # a shell says 128+N for signal N
            killed = f"killed by {signal_name(answer.status - 128)}" if answer.status > 128 else "killed"
            return RknnError(CRASH, f"{where}: it was {killed}{during} (out of memory? see dmesg on the board)", tail)
        said = last_line(answer.stderr, answer.status)
        return RknnError(ENV, f"{where}: it exited with status {answer.status}{during}: {said}", tail)

    def _reconnect(self, lost: ConnectionLost) -> None:
        """Reopen the connection once; kill and remove what the old one left, and set up a fresh
        work dir. When the board does not answer, every later item fails at once with that."""
        self.connection.close()
        self.info = self.workdir = None
        try:
            self.connection.open()
            self._remove_workdirs()
            self._set_up()
        except RknnError as exc:
            self._error = RknnError(ENV, f"{lost.message}; reconnecting failed: {_without(exc.message, self.where)}; "
                                         f"the board's remaining items are not run (check its power, network and "
                                         f"sshd)")
            self.connection.close()
            raise self._error from None

    def _remove_workdirs(self) -> None:
        if self._workdirs:
            command = "; ".join(kill_and_remove(f"{q(w)}/job-*", q(w)) for w in self._workdirs)
            self.connection.run(command, timeout=CLEAN_UP_SECONDS, doing="removing the work dir")
            self._workdirs = []

    def close(self) -> None:
        """Kill what is still running in our work dirs, remove them, disconnect. A board that went
        away is tried once more. Never raises; safe to call twice."""
        try:
            try:
                self._remove_workdirs()
            except ConnectionLost:  # now or earlier: once more, on a new connection
                self.connection.close()
                self.connection.open()
                self._remove_workdirs()
        except Exception as exc:  # the board is gone (an RknnError), or a bug of ours: warn, never raise
            reason = exc.message if isinstance(exc, RknnError) else f"{type(exc).__name__}: {exc}"
            warnings.warn(RknnWarning(f"{self.where}: cannot remove the work dir {', '.join(self._workdirs)} "
                                      f"({_without(reason, self.where)}); remove it on the board by hand"))
        finally:
            self.workdir, self._workdirs = None, []  # said once: a second close has nothing to do
            self.connection.close()


def _without(message: str, where: str) -> str:
    """`board X: cannot connect` -> `cannot connect`, for a message that names the board already."""
    return message[len(where) + 2:] if message.startswith(f"{where}: ") else message


class BoardPool:
    """The boards of --rknn-board; each (spec, version) goes to one of them, the same one
    in every process (so pytest-xdist workers agree). A board that cannot be reached, or that goes
    away, hands its items to the next board that answers (see start_for)."""

    def __init__(self, addresses: List[BoardAddress], make_session):
        self.addresses = addresses
        self._make_session = make_session
        self._sessions: Dict[BoardAddress, BoardSession] = {}

    def __bool__(self) -> bool:
        return bool(self.addresses)

    def session_for(self, key: str) -> BoardSession:
        """The session of the key's own board (not started)."""
        return self._session(self._order(key)[0])

    def start_for(self, key: str) -> Tuple[BoardSession, List[str]]:
        """The key's board, started; when it cannot be reached (ENV) or went away, the next board in the
        key's order that answers, with one line per board passed over. Raises the key's own board's
        error when none answers."""
        passed_over: List[str] = []
        first_error: Optional[RknnError] = None
        for address in self._order(key):
            session = self._session(address)
            try:
                session.start()
            except RknnError as exc:
                if exc.failure_class != ENV:
                    raise
                first_error = first_error or exc
                passed_over.append(f"board {address} did not answer ({_without(exc.message, session.where)})")
                continue
            return session, passed_over
        if first_error is None:  # no board at all
            raise RknnError(ENV, "no board to run on (--rknn-board)")
        if len(self.addresses) > 1:
            raise RknnError(ENV, f"{first_error.message}; no other board answered either "
                                 f"({', '.join(str(a) for a in self.addresses)})") from None
        raise first_error

    def _order(self, key: str) -> List[BoardAddress]:
        """The boards from the key's own one on, the same in every process."""
        import zlib

        first = zlib.crc32(key.encode()) % len(self.addresses)
        return self.addresses[first:] + self.addresses[:first]

    def _session(self, address: BoardAddress) -> BoardSession:
        if address not in self._sessions:
            self._sessions[address] = self._make_session(address)
        return self._sessions[address]

    def close(self) -> None:
        """Clean up every board; never raises (BoardSession.close does not)."""
        for session in self._sessions.values():
            session.close()
