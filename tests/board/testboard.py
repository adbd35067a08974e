"""The test board: a real OpenSSH server on 127.0.0.1 whose "board Python" has a test double
of rknn-toolkit-lite2 (tests/board/double) that stands in for an RK3588 NPU.

    board = start_test_board(tmp_path)      # sshd -i per connection on 127.0.0.1 and ::1, keys in tmp_path
    board.register(sha256, onnx, ...)        # tell the double which model a .rknn file is
    board.set_fault("segv.rknn", "segv")    # see FAULTS
    mine = board.make_python("t1")           # a personality with its own registry, faults and trace
    old = board.make_python("old", runtime_version="2.3.0", registry=mine.registry)
    bare = board.listen(sftp=False)          # another port of the same board: sshd without SFTP
    ...
    board.stop()

The listening sockets are bound here and each accepted connection is handed to `sshd -i`
(inetd mode), so no port is probed and then lost to another process. Only loopback
addresses, never another; every wait is bounded.
"""

from __future__ import annotations

import getpass
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .registrar import _op_types, update_registry

HOST = "127.0.0.1"
HOST6 = "::1"
SSHD = "/usr/sbin/sshd"
DOUBLE = Path(__file__).resolve().parent / "double"
FAULTS = ("segv", "hang", "hang_child", "none_outputs", "wrong_shape", "drift", "scale", "drop_connection",
          "power_off", "no_result")
START_SECONDS = 10.0
STOP_SECONDS = 5.0


@dataclass
class BoardPython:
    """One board personality: the board Python (a /bin/sh wrapper), and the registry (models and
    faults) and call trace that only this personality reads and writes."""

    python: Path
    registry: Path
    trace: Path

    def register(self, sha256: str, onnx, mean_values=None, std_values=None, apply_mean_std: bool = True,
                 toolkit_version: str = "2.5.0", target_platform: Optional[str] = None,
                 simulated: Optional[Path] = None) -> None:
        """Tell the double that the .rknn file with this sha256 is a build of `onnx`; `simulated`:
        the folder whose inputs.npz and outputs.npz the simulator read and wrote (the double then
        returns those outputs for those inputs)."""
        entry = {"onnx": str(Path(onnx).resolve()), "mean_values": mean_values, "std_values": std_values,
                 "apply_mean_std": bool(apply_mean_std), "toolkit_version": toolkit_version}
        if target_platform:
            entry["target_platform"] = target_platform
        if simulated:
            entry["simulated"] = str(Path(simulated).resolve())
        entry["op_types"] = _op_types(onnx)  # as registrar.py records them, for set_op_fault
        update_registry(self.registry, lambda data: data["models"].__setitem__(sha256, entry))

    def set_fault(self, rknn_name: str, fault: str) -> None:
        """Inject `fault` into inference of any .rknn file named `rknn_name` (a basename)."""
        if fault not in FAULTS and not re.fullmatch(r"slow:\d+(\.\d+)?", fault):
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}, or slow:MS")
        update_registry(self.registry, lambda data: data["faults"].__setitem__(Path(rknn_name).name, fault))

    def set_op_fault(self, op_type: str, fault: str) -> None:
        """Inject `fault` into inference of any registered model whose ONNX graph has an `op_type` node (the
        registrar records each model's op types): a runtime that crashes on one op, whatever the file is called."""
        if fault not in FAULTS and not re.fullmatch(r"slow:\d+(\.\d+)?", fault):
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}, or slow:MS")
        update_registry(self.registry, lambda data: data.setdefault("op_faults", {}).__setitem__(op_type, fault))

    def clear_faults(self) -> None:
        update_registry(self.registry, lambda data: (data["faults"].clear(), data.pop("op_faults", None)))

    def calls(self) -> List[dict]:
        """What the double was asked to do, one dict per call (see rknn_runtime.trace)."""
        try:
            text = self.trace.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


class _Listener:
    """A socket bound here; every connection it accepts is handed to its own `sshd -i`.

    Powered off (the file `power_off_marker` exists, made by the double's `power_off` fault), it
    closes every connection it accepts before sshd sees it: a board that is gone. `accepted`
    counts the connections handed to sshd (the logins, one per session when all goes well)."""

    def __init__(self, family: int, host: str, config: Path, log: Path):
        self.host = host
        self.config = config
        self.log = log
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.bind((host, 0))
        self.socket.listen(64)
        self.socket.settimeout(0.2)  # so the loop sees stop() within 0.2 s
        self.port = self.socket.getsockname()[1]
        self.power_off_marker = config.parent / f"power-off-{self.port}"
        self.accepted = 0
        self.sessions: List[subprocess.Popen] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"test-board-{host}:{self.port}", daemon=True)
        self._thread.start()

    def power_on(self) -> None:
        self.power_off_marker.unlink(missing_ok=True)

    def _serve(self) -> None:
        with open(self.log, "ab") as log:
            while not self._stopped.is_set():
                self.sessions = [p for p in self.sessions if p.poll() is None]
                try:
                    connection, _ = self.socket.accept()
                except socket.timeout:
                    continue
                except OSError:
                    return
                with connection:
                    if self.power_off_marker.exists():
                        continue  # closed unanswered
                    connection.setblocking(True)
                    self.accepted += 1
                    self.sessions.append(subprocess.Popen([SSHD, "-i", "-e", "-f", str(self.config)],
                                                          stdin=connection, stdout=connection, stderr=log,
                                                          start_new_session=True))

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=STOP_SECONDS)
        self.socket.close()
        self.power_on()
        for session in self.sessions:
            if session.poll() is None:
                session.terminate()
        for session in self.sessions:
            try:
                session.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                session.kill()
                session.wait(timeout=STOP_SECONDS)


@dataclass
class TestBoard:
    __test__ = False  # not a test class, whatever pytest thinks of the name

    folder: Path
    host: str
    port: int
    user: str
    key_path: Path
    agent_key_path: Path
    host_key: str  # "ssh-ed25519 AAAA..."
    python: Optional[Path] = None  # the default personality's
    default: Optional[BoardPython] = None
    port6: Optional[int] = None  # the same board on [::1]
    listeners: List[_Listener] = field(default_factory=list, repr=False)
    _names: "itertools.count" = field(default_factory=itertools.count, repr=False)

    @property
    def host_key_line(self) -> str:
        """The known_hosts line of the board on 127.0.0.1 and on [::1], every port it listens on."""
        names = [f"[{listener.host}]:{listener.port}" for listener in self.listeners]
        return f"{','.join(names)} {self.host_key}"

    def listen(self, sftp: bool = True) -> "_Listener":
        """Another port of this board on 127.0.0.1 (same keys and users), with its own sshd config:
        sftp=False leaves out `Subsystem sftp`, as Dropbear and minimal images do. A test that
        powers a board off (the `power_off` fault) uses one of these, so other tests keep theirs."""
        config = _write_sshd_config(self.folder, sftp=sftp)
        listener = _Listener(socket.AF_INET, HOST, config, self.folder / "sshd.log")
        self.listeners.append(listener)
        return listener

    @property
    def registry(self) -> Path:
        return self.default.registry

    # ------------------------------------------------------------------ personalities

    def make_python(self, name: Optional[str] = None, runtime_version: str = "2.5.0", driver_version: str = "0.9.8",
                    soc: str = "rk3588", lite_version: Optional[str] = None, npu: bool = True,
                    registry: Optional[Path] = None) -> BoardPython:
        """Write `folder/NAME/python`: a /bin/sh wrapper that runs this venv's Python with the
        rknnlite double and the given board personality. It reads the models and faults of
        `registry` (default: a new one of its own) and appends what it was asked to `trace.jsonl`
        next to the registry, so personalities sharing a registry share the trace."""
        home = self.folder / (name or f"personality-{next(self._names)}")
        home.mkdir(parents=True, exist_ok=True)
        registry = Path(registry) if registry else home / "registry.json"
        if not registry.exists():
            update_registry(registry, lambda data: None)
        trace = registry.with_name("trace.jsonl")
        tree = home / "device-tree"
        tree.mkdir(exist_ok=True)
        (tree / "compatible").write_bytes(f"rockchip,{soc}-evb1-lp4-v10\0rockchip,{soc}\0".encode())
        (tree / "model").write_bytes(f"Rockchip {soc.upper()} EVB1 LP4 V10 Board\0".encode())
        build = librknnrt_build(runtime_version)
        # What `strings /usr/lib/librknnrt.so | grep "librknnrt version"` finds in the real one.
        (home / "librknnrt.so").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 57 + b"rknn_init\0"
                                            + f"librknnrt version: {build}\0".encode() + b"\0" * 64)
        # The format of /sys/kernel/debug/rknpu/version on a board.
        (home / "rknpu-version").write_text(f"RKNPU driver: v{driver_version}\n")
        site = home / "site-packages"
        shutil.rmtree(site, ignore_errors=True)
        lite = lite_version or runtime_version
        dist = site / f"rknn_toolkit_lite2-{lite}.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: rknn-toolkit-lite2\nVersion: {lite}\n"
                                       "Summary: test double of Rockchip Neural Network Toolkit Lite2\n")
        (dist / "top_level.txt").write_text("rknnlite\n")
        exports = {
            "PYTHONPATH": f"{DOUBLE}:{site}",
            "RKNNLITE_DOUBLE_REGISTRY": str(registry),
            "RKNNLITE_DOUBLE_TRACE": str(trace),
            "RKNNLITE_DOUBLE_RUNTIME_VERSION": runtime_version,
            "RKNNLITE_DOUBLE_DRIVER_VERSION": driver_version,
            "RKNNLITE_DOUBLE_NPU": "1" if npu else "0",
            "RKNNLITE_DOUBLE_BOARD": str(self.folder),  # where the power_off fault leaves its marker
            "RKNN_BOARD_DEVICE_TREE": str(tree),
            "RKNN_BOARD_LIBRKNNRT": str(home / "librknnrt.so"),
            "RKNN_BOARD_DRIVER_VERSION_FILE": str(home / "rknpu-version"),
        }
        lines = ["#!/bin/sh", f"# Board Python of the pytest-rknn test board, personality {home.name!r}."]
        lines += [f"export {key}={shlex.quote(value)}" for key, value in exports.items()]
        lines.append(f'exec {shlex.quote(sys.executable)} "$@"')
        wrapper = home / "python"
        wrapper.write_text("\n".join(lines) + "\n")
        wrapper.chmod(0o755)
        return BoardPython(python=wrapper, registry=registry, trace=trace)

    def make_user_key(self, path) -> Path:
        """A fresh ed25519 key pair at `path` (+ .pub) that the board does NOT authorise."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _keygen(path, "not authorised on the pytest-rknn test board")
        return path

    # ------------------------------------------------------------------ the default personality

    def register(self, *args, **kwargs) -> None:
        self.default.register(*args, **kwargs)

    def set_fault(self, rknn_name: str, fault: str) -> None:
        self.default.set_fault(rknn_name, fault)

    def set_op_fault(self, op_type: str, fault: str) -> None:
        self.default.set_op_fault(op_type, fault)

    def clear_faults(self) -> None:
        self.default.clear_faults()

    # ------------------------------------------------------------------ processes

    def leftover_processes(self) -> List[str]:
        """Command lines of running processes left by this board: those whose command line mentions
        the board folder, and those whose environment shows a session of this board's SSH server
        or one of its personalities (so helpers a job started count too, and boards of other
        tests, xdist workers or sessions running at the same time do not). The sshd processes
        that serve connections, this process and its ancestors are not counted."""
        skip = set(_ancestors(os.getpid()))
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in skip:
                continue
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
            command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
            if not command or command.startswith((SSHD, "sshd:")):
                continue
            if str(self.folder) in command or self._started_here(entry):
                found.append(command)
        return found

    def _started_here(self, entry: Path) -> bool:
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            return False  # gone meanwhile, or another user's
        ours = f"RKNNLITE_DOUBLE_TRACE={self.folder}/".encode()  # exported by the board Python only
        ports = {str(listener.port).encode() for listener in self.listeners}
        for variable in environ:
            if variable.startswith(ours):
                return True
            if variable.startswith(b"SSH_CONNECTION="):
                fields = variable.split(b"=", 1)[1].split()
                if len(fields) == 4 and fields[3] in ports:
                    return True
        return False

    def stop(self) -> None:
        """Stop accepting and end the sessions still open (SIGTERM, then SIGKILL after a bounded
        wait). Safe to call twice."""
        for listener in self.listeners:
            listener.stop()
        self.listeners = []

# librknnrt build strings of released versions, as `strings librknnrt.so` shows them (from public logs).
KNOWN_BUILDS = {
    "1.4.0": "a10f100eb@2022-09-09T09:07:14",
    "1.5.0": "e6fe0c678@2023-05-25T08:09:20",
    "1.6.0": "9a7b5d24c@2023-12-13T17:31:11",
    "2.0.0b0": "35a6907d79@2024-03-24T10:31:14",
    "2.2.0": "c195366594@2024-09-14T12:18:56",
    "2.3.0": "c949ad889d@2024-11-07T11:35:33",
    "2.3.2": "429f97ae6b@2025-04-09T09:09:27",
}


def librknnrt_build(version: str) -> str:
    """`2.3.2 (429f97ae6b@2025-04-09T09:09:27)`; a made-up but well-formed build for other versions."""
    return f"{version} ({KNOWN_BUILDS.get(version, '0000000000@2026-01-01T00:00:00')})"


def _ancestors(pid: int) -> List[int]:
    chain = []
    for _ in range(64):  # bounded: pid 1 is reached long before
        chain.append(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid <= 1:
            break
    return chain


def _keygen(path: Path, comment: str) -> None:
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)


def _wait_for_banner(port: int, log: Path, host: str = HOST) -> None:
    """Connect once and read the banner: the listener and sshd -i really answer."""
    deadline = time.monotonic() + START_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0) as sock:
                sock.settimeout(2.0)
                banner = sock.recv(256)
                if banner.startswith(b"SSH-"):
                    return
                last = f"banner {banner!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise RuntimeError(f"sshd -i on {host}:{port} did not answer within {START_SECONDS:g} s ({last}): "
                       f"{log.read_text()[-2000:]}")


def _write_sshd_config(folder: Path, sftp: bool) -> Path:
    """The board's sshd_config (keys made by start_test_board); without SFTP, sshd_config-nosftp.
    Replaced atomically: an sshd starting meanwhile reads the old file or the new one."""
    config = folder / ("sshd_config" if sftp else "sshd_config-nosftp")
    tmp = config.with_name(f".{config.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join([
        f"HostKey {folder / 'ssh_host_ed25519_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        "UsePAM no",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "UseDNS no",
        "PrintMotd no",
        "MaxSessions 100",
        *(["Subsystem sftp internal-sftp"] if sftp else []),
        "LogLevel INFO",
    ]) + "\n")
    os.replace(tmp, config)
    return config


def start_test_board(folder: Path) -> TestBoard:
    """Listen on 127.0.0.1 and ::1 with fresh keys in `folder`; return the TestBoard. The board
    authorises two user keys: `key_path`, and `agent_key_path` for tests of the SSH agent."""
    if not os.access(SSHD, os.X_OK):
        raise RuntimeError(f"{SSHD} is missing: run `bash .ci/setup`, which installs openssh-server")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    host_key, user_key, agent_key = folder / "ssh_host_ed25519_key", folder / "id_ed25519", folder / "id_agent"
    _keygen(host_key, "pytest-rknn test board host")
    _keygen(user_key, "pytest-rknn test board user")
    _keygen(agent_key, "pytest-rknn test board user, for the SSH agent")
    authorized = folder / "authorized_keys"
    authorized.write_text("".join(Path(f"{key}.pub").read_text() for key in (user_key, agent_key)))
    authorized.chmod(0o600)

    config = _write_sshd_config(folder, sftp=True)
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    except OSError:
        pass  # not root: sshd then runs unprivileged and only lets this user in
    log = folder / "sshd.log"
    listeners = [_Listener(socket.AF_INET, HOST, config, log)]
    try:
        _wait_for_banner(listeners[0].port, log)
        if socket.has_ipv6:
            try:
                listeners.append(_Listener(socket.AF_INET6, HOST6, config, log))
            except OSError:
                pass  # no IPv6 loopback here: the board has no [::1] address
            else:
                _wait_for_banner(listeners[1].port, log, HOST6)
    except BaseException:
        for listener in listeners:
            listener.stop()
        raise
    kind, key = host_key.with_name(host_key.name + ".pub").read_text().split()[:2]
    port6 = listeners[1].port if len(listeners) > 1 else None
    board = TestBoard(folder=folder, host=HOST, port=listeners[0].port, user=getpass.getuser(), key_path=user_key,
                      agent_key_path=agent_key, host_key=f"{kind} {key}", port6=port6, listeners=listeners)
    board.default = board.make_python("default")
    board.python = board.default.python
    return board


__all__ = ["BoardPython", "TestBoard", "start_test_board", "FAULTS", "DOUBLE"]
