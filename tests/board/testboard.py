"""The test board: a real OpenSSH server on 127.0.0.1 whose "board Python" has a test double
of rknn-toolkit-lite2 (tests/board/double) that stands in for an RK3588 NPU.

    board = start_test_board(tmp_path)      # sshd -D on 127.0.0.1:<free port>, keys in tmp_path
    board.register(sha256, onnx, ...)        # tell the double which model a .rknn file is
    board.set_fault("segv.rknn", "segv")    # segv | hang | none_outputs | wrong_shape | drift
    old = board.make_python("old", runtime_version="2.3.0")   # another board personality
    ...
    board.stop()

Only 127.0.0.1, never another address; every wait is bounded.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .registrar import update_registry

HOST = "127.0.0.1"
SSHD = "/usr/sbin/sshd"
DOUBLE = Path(__file__).resolve().parent / "double"
REMOTE_WORKDIR = re.compile(r"pytest-rknn\.[A-Za-z0-9]{6,}")
FAULTS = ("segv", "hang", "none_outputs", "wrong_shape", "drift")
START_SECONDS = 10.0
STOP_SECONDS = 5.0


@dataclass
class TestBoard:
    __test__ = False  # not a test class, whatever pytest thinks of the name

    folder: Path
    host: str
    port: int
    user: str
    key_path: Path
    host_key_line: str
    registry: Path
    python: Optional[Path] = None
    process: Optional[subprocess.Popen] = field(default=None, repr=False)

    # ------------------------------------------------------------------ personalities

    def make_python(self, name: str, runtime_version: str = "2.5.0", driver_version: str = "0.9.8",
                    soc: str = "rk3588", lite_version: Optional[str] = None, npu: bool = True) -> Path:
        """Write `folder/NAME/python`: a /bin/sh wrapper that runs this venv's Python with the
        rknnlite double and the given board personality. Returns its path."""
        home = self.folder / name
        home.mkdir(parents=True, exist_ok=True)
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
            "RKNNLITE_DOUBLE_REGISTRY": str(self.registry),
            "RKNNLITE_DOUBLE_RUNTIME_VERSION": runtime_version,
            "RKNNLITE_DOUBLE_DRIVER_VERSION": driver_version,
            "RKNNLITE_DOUBLE_NPU": "1" if npu else "0",
            "RKNN_BOARD_DEVICE_TREE": str(tree),
            "RKNN_BOARD_LIBRKNNRT": str(home / "librknnrt.so"),
            "RKNN_BOARD_DRIVER_VERSION_FILE": str(home / "rknpu-version"),
        }
        lines = ["#!/bin/sh", f"# Board Python of the pytest-rknn test board, personality {name!r}."]
        lines += [f"export {key}={shlex.quote(value)}" for key, value in exports.items()]
        lines.append(f'exec {shlex.quote(sys.executable)} "$@"')
        wrapper = home / "python"
        wrapper.write_text("\n".join(lines) + "\n")
        wrapper.chmod(0o755)
        return wrapper

    def make_user_key(self, path) -> Path:
        """A fresh ed25519 key pair at `path` (+ .pub) that the board does NOT authorise."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _keygen(path, "not authorised on the pytest-rknn test board")
        return path

    # ------------------------------------------------------------------ registry

    def register(self, sha256: str, onnx, mean_values=None, std_values=None, apply_mean_std: bool = True,
                 toolkit_version: str = "2.5.0", target_platform: Optional[str] = None) -> None:
        """Tell the double that the .rknn file with this sha256 is a build of `onnx`."""
        entry = {"onnx": str(Path(onnx).resolve()), "mean_values": mean_values, "std_values": std_values,
                 "apply_mean_std": bool(apply_mean_std), "toolkit_version": toolkit_version}
        if target_platform:
            entry["target_platform"] = target_platform
        update_registry(self.registry, lambda data: data["models"].__setitem__(sha256, entry))

    def set_fault(self, rknn_name: str, fault: str) -> None:
        """Inject `fault` into inference of any .rknn file named `rknn_name` (a basename)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        update_registry(self.registry, lambda data: data["faults"].__setitem__(Path(rknn_name).name, fault))

    def clear_faults(self) -> None:
        update_registry(self.registry, lambda data: data["faults"].clear())

    def clear_models(self) -> None:
        update_registry(self.registry, lambda data: data["models"].clear())

    # ------------------------------------------------------------------ processes

    def leftover_processes(self) -> List[str]:
        """Command lines of running processes left by this board: their command line mentions the
        board folder, the rknnlite double, or a pytest-rknn remote work dir (pytest-rknn.XXXXXXXX),
        and they are this board's (the folder is in the command line, or the environment shows a
        session of this sshd or this board's registry; so boards of other tests, other xdist
        workers or other sessions running at the same time do not count). The sshd listener, this
        process and its ancestors are not counted."""
        skip = set(_ancestors(os.getpid()))
        if self.process is not None:
            skip.add(self.process.pid)
        marks = (str(self.folder), str(DOUBLE))
        ours = (f"RKNNLITE_DOUBLE_REGISTRY={self.registry}".encode(), )
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in skip:
                continue
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
            command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
            if not command or not (any(mark in command for mark in marks) or REMOTE_WORKDIR.search(command)):
                continue
            if str(self.folder) in command or self._started_here(entry, ours):
                found.append(command)
        return found

    def _started_here(self, entry: Path, ours) -> bool:
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            return False  # gone meanwhile, or another user's
        for variable in environ:
            if variable in ours:
                return True
            if variable.startswith(b"SSH_CONNECTION="):
                fields = variable.split(b"=", 1)[1].split()
                if len(fields) == 4 and fields[2] == self.host.encode() and fields[3] == str(self.port).encode():
                    return True
        return False

    def stop(self) -> None:
        """Terminate sshd (SIGTERM, then SIGKILL after a bounded wait). Safe to call twice."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_SECONDS)
        self.process = None


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)


def _wait_for_banner(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with status {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=1.0) as sock:
                sock.settimeout(2.0)
                banner = sock.recv(256)
                if banner.startswith(b"SSH-"):
                    return
                last = f"banner {banner!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    process.kill()
    process.wait(timeout=STOP_SECONDS)
    raise RuntimeError(f"sshd on {HOST}:{port} did not answer within {START_SECONDS:g} s ({last}): "
                       f"{log.read_text()[-2000:]}")


def start_test_board(folder: Path) -> TestBoard:
    """Start sshd on 127.0.0.1 with fresh keys in `folder`; return the TestBoard."""
    if not os.access(SSHD, os.X_OK):
        raise RuntimeError(f"{SSHD} is missing: run `bash .ci/setup`, which installs openssh-server")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    host_key, user_key = folder / "ssh_host_ed25519_key", folder / "id_ed25519"
    _keygen(host_key, "pytest-rknn test board host")
    _keygen(user_key, "pytest-rknn test board user")
    authorized = folder / "authorized_keys"
    authorized.write_text(user_key.with_name(user_key.name + ".pub").read_text())
    authorized.chmod(0o600)
    registry = folder / "registry.json"
    registry.write_text(json.dumps({"models": {}, "faults": {}}))

    port = _free_port()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"ListenAddress {HOST}",
        f"Port {port}",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized}",
        f"PidFile {folder / 'sshd.pid'}",
        "UsePAM no",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "UseDNS no",
        "PrintMotd no",
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        "Subsystem sftp internal-sftp",
        "LogLevel INFO",
    ]) + "\n")
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    except OSError:
        pass  # not root: sshd then runs unprivileged and only lets this user in
    log = folder / "sshd.log"
    with open(log, "ab") as stderr:
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                   stdout=stderr, stderr=stderr, start_new_session=True)
    try:
        _wait_for_banner(process, port, log)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_SECONDS)
        raise
    kind, key = host_key.with_name(host_key.name + ".pub").read_text().split()[:2]
    board = TestBoard(folder=folder, host=HOST, port=port, user=getpass.getuser(), key_path=user_key,
                      host_key_line=f"[{HOST}]:{port} {kind} {key}", registry=registry, process=process)
    board.python = board.make_python("default")
    return board


__all__ = ["TestBoard", "start_test_board", "FAULTS", "DOUBLE"]
