"""One SSH connection to a board: host keys verified by default, ~/.ssh/config and the
agent honoured, every failure turned into one ENV message that says what to do. Files go
over SFTP, or through `cat` on an exec channel when the board's sshd has no SFTP."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shlex
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, List, Literal, Optional, Tuple, Union

from ..errors import ENV, TIMEOUT, RknnError

if TYPE_CHECKING:
    import paramiko  # imported when a board is used

SSH_CONFIG = "~/.ssh/config"
USER_KNOWN_HOSTS = "~/.ssh/known_hosts"
SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
TRANSFER_SECONDS = 600.0  # bounds one file transfer (SFTP: each read and write; cat: the whole file)
SETTLE_SECONDS = 0.5  # after a failed operation, how long the transport may take to notice a dead socket
MISSING = 3  # exit status of the `cat` download of a file that does not exist
TRANSPORT_LOG = "pytest_rknn.board.ssh"  # paramiko's transport thread, quiet unless you lower its level
logging.getLogger(TRANSPORT_LOG).setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class BoardAddress:
    host: str
    port: Optional[int] = None  # None: from ~/.ssh/config, else 22

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host


ADDRESS_FORM = "write HOST, HOST:PORT or [IPv6]:PORT, comma separated, e.g. --rknn-board=192.168.1.10:22"
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # host names and ~/.ssh/config aliases
_NUMBERS = re.compile(r"[0-9.]+")


def parse_board_option(value: str) -> List[BoardAddress]:
    """`HOST[:PORT]`, comma separated; IPv6 as `[::1]:2222` (or `::1` without a port). Raises an
    RknnError naming the bad part and the form expected."""
    boards = [_parse_address(part) for part in (p.strip() for p in value.split(",")) if part]
    if not boards:
        raise RknnError(ENV, f"--rknn-board: '{value}' names no board ({ADDRESS_FORM})")
    return boards


def _parse_address(part: str) -> BoardAddress:
    def bad(problem: str):
        raise RknnError(ENV, f"--rknn-board: '{part}': {problem} ({ADDRESS_FORM})")

    host, port = part, None
    if part.startswith("["):
        host, closed, rest = part[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            bad("an IPv6 address goes in brackets, followed by nothing or :PORT")
        port = rest[1:] if rest else None
        if not _is_ipv6(host):
            bad(f"'[{host}]' does not hold an IPv6 address")
    elif part.count(":") > 1:
        if not _is_ipv6(part):
            bad(f"'{part}' is not an IPv6 address")
    else:
        host, _, port = part.partition(":") if ":" in part else (part, "", None)
        if _NUMBERS.fullmatch(host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                bad(f"'{host}' is not an IPv4 address (four numbers from 0 to 255)")
        elif not _HOST_NAME.fullmatch(host):
            bad(f"'{host}' is not a host name or IP address" if host else "the host is missing")
    if port is not None and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        bad(f"the port '{port}' is not a number from 1 to 65535")
    return BoardAddress(host, int(port) if port else None)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def insecure_warning(addresses: List[BoardAddress]) -> str:
    """Said once per session under --rknn-board-insecure."""
    boards = ", ".join(str(a) for a in addresses)
    return (f"--rknn-board-insecure: the host keys of {boards} are not checked, so a machine in between could "
            f"read the models and answer in the board's place; add the keys to {USER_KNOWN_HOSTS} "
            f"(ssh-keyscan -p PORT HOST) and drop the option")


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


class ConnectionLost(RknnError):
    """The SSH connection to a board broke in the middle of something (ENV)."""

    def __init__(self, message: str):
        super().__init__(ENV, message)


class SshConnection:
    def __init__(self, address: BoardAddress, settings: SshSettings):
        self.address = address
        self.settings = settings
        self.where = f"board {address}"
        self.client: Optional[paramiko.SSHClient] = None
        # None: not tried on this connection; False: the board's sshd has no SFTP
        self._sftp: Union[None, Literal[False], paramiko.SFTPClient] = None

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
        where = self.where
        transport_log = logging.getLogger("paramiko.transport")
        level = transport_log.level
        transport_log.setLevel(logging.CRITICAL)  # its thread logs what the exception below says again
        connected = False
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            # Without it every channel open waits out a delayed ACK (about 40 ms on loopback).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # key_filename: paramiko takes a list of files too; its stubs say a str only
            client.connect(host, port=port, username=user, key_filename=keys or None,  # type: ignore[arg-type]
                           timeout=timeout, sock=sock, banner_timeout=timeout, auth_timeout=timeout, allow_agent=True,
                           look_for_keys=not keys)
            connected = True
            # Its thread logs every failure that the methods below turn into one message of ours.
            transport = client.get_transport()
            assert transport is not None  # connected
            transport.set_log_channel(TRANSPORT_LOG)
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
            if not connected:
                client.close()
        self.client = client
        self._sftp = None

    def _resolve(self) -> Tuple[str, int, str, List[str]]:
        """Host, port, user and keys: options first, then ~/.ssh/config, then defaults."""
        import getpass

        import paramiko

        config: Dict[str, Any] = {}
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

    def alive(self) -> bool:
        transport = self.client.get_transport() if self.client is not None else None
        return transport is not None and transport.is_active()

    def _alive_after_failure(self) -> bool:
        """Still connected after an operation failed? The transport's thread closes the channels
        a moment before it marks itself inactive, so give it that moment."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.alive()

    @contextmanager
    def _guard(self, doing: str):
        """The SSH transport's exceptions as ours: the connection was lost, or `doing` failed."""
        import paramiko

        if not self.alive():
            raise ConnectionLost(f"{self.where}: the SSH connection is closed ({doing})")
        try:
            yield
        except (OSError, EOFError, paramiko.SSHException) as exc:
            reason = str(exc) or type(exc).__name__
            if self._alive_after_failure():
                raise RknnError(ENV, f"{self.where}: {doing} failed: {reason}") from None
            raise ConnectionLost(f"{self.where}: the SSH connection was lost while {doing} ({reason})") from None

    def run(self, command: str, timeout: float, doing: str = "running a command") -> CommandResult:
        """Run a shell command on the board; TIMEOUT if it has not finished in `timeout` s."""
        return self._exec(command, timeout, doing)

    def _exec(self, command: str, timeout: float, doing: str, send: Optional[Path] = None,
              receive: Optional[BinaryIO] = None) -> CommandResult:
        """Run `command` on an exec channel: `send` a file to its stdin, write its stdout to
        `receive` (else keep it), all within `timeout` s."""
        out, err = [], []
        deadline = time.monotonic() + timeout
        with self._guard(doing):
            transport = self.client.get_transport() if self.client is not None else None
            assert transport is not None  # _guard: the connection is alive
            channel = transport.open_session(timeout=self.settings.connect_timeout)
            try:
                channel.settimeout(timeout)
                channel.exec_command(command)
                if send is not None:
                    with open(send, "rb") as handle:
                        for block in iter(lambda: handle.read(1 << 16), b""):
                            channel.sendall(block)
                    channel.shutdown_write()
                while True:
                    while channel.recv_ready():
                        data = channel.recv(65536)
                        if receive is not None:
                            receive.write(data)
                        else:
                            out.append(data)
                    while channel.recv_stderr_ready():
                        err.append(channel.recv_stderr(65536))
                    if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                        break
                    if time.monotonic() > deadline:
                        raise RknnError(TIMEOUT, f"{self.where}: no answer after {timeout:g} s ({doing})")
                    time.sleep(0.002)
                status = channel.recv_exit_status()
            finally:
                channel.close()
        if status == -1 and not self._alive_after_failure():  # closed with no exit status: by the connection's end
            raise ConnectionLost(f"{self.where}: the SSH connection was lost while {doing}")
        return CommandResult(status, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace"))

    def _sftp_session(self):
        """SFTP, opened on first use; None when the board's sshd has no SFTP subsystem (Dropbear,
        minimal images): files then go through `cat` on an exec channel. Asked once per connection."""
        import paramiko

        if self._sftp is None:
            with self._guard("opening SFTP"):
                assert self.client is not None  # _guard: the connection is alive
                try:
                    sftp = self._sftp = self.client.open_sftp()
                except paramiko.SSHException:
                    if not self.alive():
                        raise
                    self._sftp = False  # refused on a live connection (were it dying, the next step says so)
                else:
                    channel = sftp.get_channel()
                    assert channel is not None  # an open SFTP session has its channel
                    channel.settimeout(TRANSFER_SECONDS)
        return self._sftp or None

    def put(self, local: Path, remote: str) -> None:
        doing = f"uploading {local.name}"
        sftp = self._sftp_session()
        if sftp is not None:
            with self._guard(doing):
                sftp.put(str(local), remote)
            return
        done = self._exec(f"cat > {shlex.quote(remote)}", TRANSFER_SECONDS, doing, send=local)
        if done.status != 0:
            raise RknnError(ENV, f"{self.where}: cannot write {remote}: {last_line(done.stderr, done.status)}")

    def get(self, remote: str, local: Path) -> bool:
        """Copy a remote file here; False, and no local file, when it does not exist."""
        doing = f"downloading {local.name}"
        partial = local.with_name(f".{local.name}.part")  # SFTP makes the local file before it finds out
        local.unlink(missing_ok=True)
        try:
            sftp = self._sftp_session()
            if sftp is not None:
                with self._guard(doing):
                    try:
                        sftp.get(remote, str(partial))
                    except FileNotFoundError:
                        return False
            else:
                path = shlex.quote(remote)
                with open(partial, "wb") as handle:
                    done = self._exec(f"[ -f {path} ] || exit {MISSING}; exec cat -- {path}", TRANSFER_SECONDS,
                                      doing, receive=handle)
                if done.status == MISSING:
                    return False
                if done.status != 0:
                    raise RknnError(ENV, f"{self.where}: cannot read {remote}: {last_line(done.stderr, done.status)}")
            os.replace(partial, local)
            return True
        finally:
            partial.unlink(missing_ok=True)

    def close(self) -> None:
        """Disconnect. Never raises; safe to call twice."""
        for part in (self._sftp or None, self.client):
            if part is not None:
                try:
                    part.close()
                except Exception:  # a transport that is already gone
                    pass
        self.client = self._sftp = None


def last_line(text: str, status: int) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else f"exit status {status}"


def _authentication_failed(where: str, user: str, keys: List[str]) -> str:
    tried = f"key {keys[0]}" if keys else "the SSH agent and ~/.ssh/id_*"
    return f"{where}: authentication failed as '{user}' (tried {tried}); pass --rknn-ssh-key or --rknn-board-user"


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"
