"""One SSH connection to a board: host keys verified by default, ~/.ssh/config and the
agent honoured, every failure turned into one ENV message that says what to do."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from ..errors import ENV, TIMEOUT, RknnError

SSH_CONFIG = "~/.ssh/config"
USER_KNOWN_HOSTS = "~/.ssh/known_hosts"
SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"


@dataclass(frozen=True)
class BoardAddress:
    host: str
    port: Optional[int] = None  # None: from ~/.ssh/config, else 22

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host


def parse_board_option(value: str) -> List[BoardAddress]:
    """`HOST[:PORT]`, comma separated; IPv6 as `[::1]:2222`."""
    boards = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        host, port = part, None
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
        elif part.count(":") == 1:
            host, port = part.split(":")
        if not host or (port is not None and not port.isdigit()):
            raise RknnError(ENV, f"--rknn-board: '{part}' is not HOST or HOST:PORT (e.g. 192.168.1.10:22)")
        boards.append(BoardAddress(host, int(port) if port else None))
    return boards


@dataclass(frozen=True)
class SshSettings:
    user: Optional[str] = None
    key_path: Optional[str] = None
    insecure: bool = False  # accept any host key (and do not check known_hosts)
    connect_timeout: float = 10.0


@dataclass
class CommandResult:
    status: int
    stdout: str
    stderr: str


class SshConnection:
    def __init__(self, address: BoardAddress, settings: SshSettings):
        self.address = address
        self.settings = settings
        self.client = None
        self._sftp = None

    def open(self) -> None:
        import paramiko

        host, port, user, keys = self._resolve()
        client = paramiko.SSHClient()
        if self.settings.insecure:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            for path in (SYSTEM_KNOWN_HOSTS, os.path.expanduser(USER_KNOWN_HOSTS)):
                if os.path.isfile(path):
                    client.load_system_host_keys(path)  # read only: pytest-rknn never writes known_hosts
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        timeout = self.settings.connect_timeout
        where = f"board {self.address}"
        transport_log = logging.getLogger("paramiko.transport")
        level = transport_log.level
        transport_log.setLevel(logging.CRITICAL)  # its thread logs what the exception below says again
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            # Without it every channel open waits out a delayed ACK (about 40 ms on loopback).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(host, port=port, username=user, key_filename=keys or None, timeout=timeout, sock=sock,
                           banner_timeout=timeout, auth_timeout=timeout, allow_agent=True, look_for_keys=not keys)
        except paramiko.BadHostKeyException:
            raise RknnError(ENV, f"{where}: its host key does not match known_hosts (the board was reinstalled, or "
                                 f"someone is in between); check it, then update {USER_KNOWN_HOSTS} "
                                 f"(ssh-keygen -R '{_known_hosts_name(host, port)}'), or pass --rknn-board-insecure"
                            ) from None
        except paramiko.AuthenticationException:
            raise RknnError(ENV, _authentication_failed(where, user, keys)) from None
        except paramiko.SSHException as exc:
            if "No authentication methods available" in str(exc):  # no key, no agent: nothing was offered
                raise RknnError(ENV, _authentication_failed(where, user, keys)) from None
            if "not found in known_hosts" in str(exc):
                raise RknnError(ENV, f"{where}: its host key is not in known_hosts; verify it and add it "
                                     f"(ssh-keyscan -p {port} {host} >> {USER_KNOWN_HOSTS}), or pass "
                                     f"--rknn-board-insecure") from None
            if "banner" in str(exc) or "No existing session" in str(exc):  # connected, but no SSH answer
                raise RknnError(ENV, f"{where}: no answer within {timeout:g} s (is it on and reachable?)") from None
            raise RknnError(ENV, f"{where}: SSH failed: {exc}") from None
        except (socket.timeout, TimeoutError):
            raise RknnError(ENV, f"{where}: no answer within {timeout:g} s (is it on and reachable?)") from None
        except socket.gaierror as exc:
            raise RknnError(ENV, f"{where}: unknown host name: {exc.strerror}") from None
        except OSError as exc:  # connection refused, no route; paramiko wraps them per address
            inner = list(getattr(exc, "errors", {}).values())
            reason = (inner[0] if inner else exc).strerror or str(exc)
            raise RknnError(ENV, f"{where}: cannot connect: {reason} (is sshd running on port {port}?)") from None
        finally:
            transport_log.setLevel(level)
        self.client = client

    def _resolve(self) -> Tuple[str, int, str, List[str]]:
        """Host, port, user and keys: options first, then ~/.ssh/config, then defaults."""
        import getpass

        import paramiko

        config = {}
        path = os.path.expanduser(SSH_CONFIG)
        if os.path.isfile(path):
            config = paramiko.SSHConfig.from_path(path).lookup(self.address.host)
        host = config.get("hostname", self.address.host)
        port = self.address.port or int(config.get("port", 22))
        user = self.settings.user or config.get("user") or getpass.getuser()
        keys = [self.settings.key_path] if self.settings.key_path else [
            os.path.expanduser(k) for k in config.get("identityfile", []) if os.path.isfile(os.path.expanduser(k))]
        if self.settings.key_path and not os.path.isfile(os.path.expanduser(self.settings.key_path)):
            raise RknnError(ENV, f"--rknn-ssh-key: no such file: {self.settings.key_path}")
        return host, port, user, [os.path.expanduser(k) for k in keys]

    @property
    def sftp(self):
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run a shell command on the board; TIMEOUT if it has not finished in `timeout` s."""
        channel = self.client.get_transport().open_session(timeout=self.settings.connect_timeout)
        channel.exec_command(command)
        out, err = [], []
        deadline = time.monotonic() + timeout
        while True:
            while channel.recv_ready():
                out.append(channel.recv(65536))
            while channel.recv_stderr_ready():
                err.append(channel.recv_stderr(65536))
            if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                break
            if time.monotonic() > deadline:
                channel.close()
                raise RknnError(TIMEOUT, f"board {self.address}: no answer after {timeout:g} s")
            time.sleep(0.002)
        status = channel.recv_exit_status()
        channel.close()
        return CommandResult(status, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace"))

    def put(self, local: Path, remote: str) -> None:
        self.sftp.put(str(local), remote)

    def get(self, remote: str, local: Path) -> bool:
        """Copy a remote file here; False when it does not exist."""
        try:
            self.sftp.get(remote, str(local))
        except FileNotFoundError:
            return False
        return True

    def remove_tree(self, remote: str) -> None:
        """Remove a flat remote folder over SFTP (no shell round trip, no quoting)."""
        for name in self.sftp.listdir(remote):
            self.sftp.remove(f"{remote}/{name}")
        self.sftp.rmdir(remote)

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        if self.client is not None:
            self.client.close()
        self.client = self._sftp = None


def _authentication_failed(where: str, user: str, keys: List[str]) -> str:
    tried = f"key {keys[0]}" if keys else "the SSH agent and ~/.ssh/id_*"
    return f"{where}: authentication failed as '{user}' (tried {tried}); pass --rknn-ssh-key or --rknn-board-user"


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"
