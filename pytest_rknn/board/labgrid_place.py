"""A board taken from a labgrid coordinator: reserve a place (by name or tags), wait for it, acquire it,
read its NetworkService (address, port, user), and at the end cancel the reservation and release it.

It drives the real `labgrid-client` command (labgrid >= 24, whose coordinator speaks gRPC) with a timeout
on every call, so pytest-rknn never imports labgrid. Every failure is one ENV line naming the option, the
problem and the fix; once a place is acquired, a failure releases it before it is raised."""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..errors import ENV, RknnError
from .connection import BoardAddress

CLIENT = "labgrid-client"
INSTALL = "pip install 'pytest-rknn[labgrid]', or give --rknn-labgrid-client=PATH"
DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid-client's own default
CALL_SECONDS = 30.0  # one labgrid-client call (waiting for a place is bounded by --rknn-labgrid-wait instead)
FIRST_REPORT_SECONDS = 1.0  # a place not allocated by then is busy: say so
REPORT_SECONDS = 30.0  # then a progress line this often
SHOWN_PLACES = 10  # of the coordinator's places, in the line that says none matches
# labgrid-client reads these; LG_ENV would even make `acquire` take the env file's places instead of ours.
CLIENT_ENVIRONMENT_DROPPED = ("LG_ENV", "LG_PLACE", "PLACE", "LG_TOKEN", "LG_STATE", "STATE", "LG_INITIAL_STATE",
                              "LG_COORDINATOR")
TAG_KEY = re.compile(r"[a-z][a-z0-9_]+")  # what the coordinator accepts
TAG_VALUE = re.compile(r"[A-Za-z0-9_.:-]+")


@dataclass(frozen=True)
class PlaceRequest:
    """What --rknn-labgrid-coordinator, --rknn-labgrid-place, --rknn-labgrid-tags and --rknn-labgrid-wait ask for."""

    coordinator: str
    place: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    wait: float = 600.0
    client: Optional[str] = None  # --rknn-labgrid-client; None: find_client()

    @property
    def filters(self) -> List[str]:
        """The reservation filter: the coordinator treats `name` as a tag every place has."""
        found = {"name": self.place} if self.place else {}
        found.update(self.tags)
        return [f"{k}={v}" for k, v in found.items()]

    @property
    def option(self) -> str:
        """The option that names the place, for messages."""
        if self.place:
            return f"--rknn-labgrid-place={self.place}"
        return f"--rknn-labgrid-tags={','.join(f'{k}={v}' for k, v in self.tags.items())}"

    def describe(self) -> str:
        tags = ", ".join(f"{k}={v}" for k, v in self.tags.items())
        if self.place:
            return f"labgrid place {self.place}" + (f" with {tags}" if tags else "")
        return f"a labgrid place with {tags}"

    def matches(self, place: "PlaceInfo") -> bool:
        tags = dict(place.tags, name=place.name)
        return all(tags.get(k) == v for k, v in (f.split("=", 1) for f in self.filters))


def parse_tags(text: str) -> Dict[str, str]:
    """`key=value[,key=value]`; a ValueError that says what to write."""
    tags = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, equals, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not value:
            raise ValueError(f"'{part}' is not key=value (write e.g. --rknn-labgrid-tags=soc=rk3588,lab=ci)")
        if not TAG_KEY.fullmatch(key):
            raise ValueError(f"'{key}' is not a labgrid tag key (lower-case letters, digits and _, starting with a "
                             f"letter, at least two characters)")
        if key == "name":
            raise ValueError("the tag name is the place's name: give it as --rknn-labgrid-place=NAME")
        if not TAG_VALUE.fullmatch(value):
            raise ValueError(f"'{value}' is not a labgrid tag value (letters, digits, _ . : -)")
        tags[key] = value
    if not tags:
        raise ValueError(f"'{text}' names no tag (write e.g. --rknn-labgrid-tags=soc=rk3588)")
    return tags


def find_client() -> Optional[str]:
    """labgrid-client next to this Python (its virtualenv), else on PATH."""
    beside = Path(sys.executable).with_name(CLIENT)
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(CLIENT)


@dataclass
class PlaceInfo:
    name: str
    tags: Dict[str, str] = field(default_factory=dict)
    acquired: Optional[str] = None  # "host/user"
    reservation: Optional[str] = None  # the token of the reservation it is allocated to


def parse_places(text: str) -> List[PlaceInfo]:
    """The blocks of `labgrid-client -v places` (and the head of `show`): `Place 'NAME':` then indented
    `key: value` lines (tags as `k=v, k=v`, `acquired: None` or `host/user`, `reservation: TOKEN`)."""
    places: List[PlaceInfo] = []
    for line in text.splitlines():
        head = re.fullmatch(r"Place '(.+)':\s*", line)
        if head:
            places.append(PlaceInfo(head.group(1)))
            continue
        item = re.fullmatch(r"  (tags|acquired|reservation): (.*)", line.rstrip())
        if not places or not item:
            continue
        key, value = item.groups()
        if key == "tags":
            places[-1].tags = dict(t.partition("=")[::2] for t in value.split(", ") if "=" in t)
        elif value != "None":
            setattr(places[-1], key, value)
    return places


@dataclass(frozen=True)
class NetworkService:
    address: str
    port: int
    username: Optional[str]
    proxy_required: bool = False


def parse_network_services(text: str) -> List[NetworkService]:
    """The NetworkService resources that `labgrid-client -p PLACE show` lists as acquired: a line
    `Acquired resource 'NAME' (PATH):` followed by the resource as an indented Python literal."""
    services, lines = [], text.splitlines()
    for index, line in enumerate(lines):
        if not re.match(r"Acquired resource '.*' \(.*\):\s*$", line):
            continue
        body = []
        for following in lines[index + 1:]:
            if not following.startswith(" "):
                break
            body.append(following.strip())
        try:
            resource = ast.literal_eval(" ".join(body))
        except (ValueError, SyntaxError):
            continue
        if not isinstance(resource, dict) or resource.get("cls") != "NetworkService":
            continue
        params = resource.get("params") or {}
        if not params.get("address"):
            continue
        extra = params.get("extra") or {}
        services.append(NetworkService(str(params["address"]), int(params.get("port") or 22),
                                       params.get("username") or None, bool(extra.get("proxy_required"))))
    return services


class LabgridClient:
    """labgrid-client against one coordinator; every call bounded, every failure one ENV line."""

    def __init__(self, program: str, coordinator: str):
        self.program = program
        self.coordinator = coordinator
        self.environment = {k: v for k, v in os.environ.items() if k not in CLIENT_ENVIRONMENT_DROPPED}

    def command(self, *args: str) -> List[str]:
        return [self.program, "-x", self.coordinator, *args]

    def run(self, *args: str, timeout: float = CALL_SECONDS) -> str:
        try:
            done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout,
                                  env=self.environment, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RknnError(ENV, f"--rknn-labgrid-coordinator: `labgrid-client {' '.join(args)}` did not finish "
                                 f"within {timeout:g} s (is the coordinator at {self.coordinator} overloaded or "
                                 f"stuck?)") from None
        except OSError as exc:
            raise RknnError(ENV, f"cannot run {self.program}: {exc.strerror or exc} ({INSTALL})") from None
        if done.returncode != 0:
            raise self.failure(args, done.stderr)
        return done.stdout

    def failure(self, args, stderr: str) -> RknnError:
        if "Could not connect to coordinator" in stderr or "coordinator is unavailable" in stderr:
            return RknnError(ENV, f"--rknn-labgrid-coordinator: no labgrid coordinator answers at "
                                  f"{self.coordinator} (is labgrid-coordinator running there? give its HOST:PORT "
                                  f"with --rknn-labgrid-coordinator, or set LG_COORDINATOR)")
        return RknnError(ENV, f"`labgrid-client -x {self.coordinator} {' '.join(args)}` failed: "
                              f"{_labgrid_line(stderr)}")

    def places(self) -> List[PlaceInfo]:
        return parse_places(self.run("-v", "places"))


def _labgrid_line(stderr: str) -> str:
    """labgrid-client's own error line, without its program-name prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "rror" in line]
    line = (errors or lines or ["no message"])[-1]
    return re.sub(r"^labgrid-client: (error: )?", "", line)


@dataclass
class HeldPlace:
    """A place this session reserved and acquired; release() gives it back (once)."""

    client: LabgridClient
    name: str
    token: str
    boards: List[BoardAddress]
    user: Optional[str]
    released: bool = False

    def release(self) -> List[str]:
        """Cancel the reservation, then release the place; the problems, one line each (never raises).
        In this order the coordinator hands the place to the next waiting reservation at once (released
        first, it would wait for the coordinator's next scheduling round, up to 15 s)."""
        if self.released:
            return []
        self.released = True
        return _give_back(self.client, self.token, self.name)


def _give_back(client: LabgridClient, token: str, place: Optional[str]) -> List[str]:
    problems = []
    calls = [("cancel-reservation", token)] + ([("-p", place, "release")] if place else [])
    for args in calls:
        try:
            client.run(*args)
        except RknnError as exc:
            if "does not exist" not in exc.message and "is not acquired" not in exc.message:
                problems.append(exc.message)
    return problems


def take_place(request: PlaceRequest, progress: Callable[[str], None]) -> HeldPlace:
    """Reserve, wait (up to request.wait seconds, with a progress line), acquire and read the place."""
    program = request.client or find_client()
    if program is None:
        raise RknnError(ENV, f"{request.option}: labgrid-client is not installed, neither next to {sys.executable} "
                             f"nor on PATH ({INSTALL})")
    if not (os.path.isfile(program) and os.access(program, os.X_OK)):
        raise RknnError(ENV, f"--rknn-labgrid-client={program}: no executable there (give the path of labgrid-client, "
                             f"e.g. ~/.local/bin/labgrid-client from `pipx install labgrid`)")
    client = LabgridClient(program, request.coordinator)
    places = client.places()  # also: is the coordinator there at all?
    if not any(request.matches(p) for p in places):
        known = ", ".join(f"{p.name} ({', '.join(f'{k}={v}' for k, v in p.tags.items()) or 'no tags'})"
                          for p in places[:SHOWN_PLACES]) or "none"
        if len(places) > SHOWN_PLACES:
            known += f" and {len(places) - SHOWN_PLACES} more (labgrid-client -v places)"
        fix = (f"create it (labgrid-client -x {request.coordinator} -p {request.place} create) or name another"
               if request.place and not request.tags else "give tags a place has (labgrid-client -p NAME set-tags)")
        raise RknnError(ENV, f"{request.option}: no place on the labgrid coordinator {request.coordinator} matches "
                             f"{' '.join(request.filters)}; its places: {known} ({fix})")
    output = client.run("reserve", "--shell", *request.filters)
    printed = re.search(r"LG_TOKEN=(\w+)", output)
    if printed is None:
        raise RknnError(ENV, f"labgrid-client reserve printed no token: {output.strip()[-200:]!r}")
    token = printed.group(1)
    acquired, acquiring = None, False
    try:
        _wait_for(client, token, request, progress)
        acquiring = True
        client.run("-p", f"+{token}", "acquire")
        shown = client.run("-p", f"+{token}", "show")
        head = parse_places(shown)
        acquired = head[0].name if head else None
        if acquired is None:
            raise RknnError(ENV, f"labgrid-client show names no place: {shown.strip()[:200]!r}")
        held = _held(client, acquired, token, shown, request)
    except BaseException:
        if acquiring and acquired is None:  # the acquire may have gone through before `show` failed
            acquired = next((p.name for p in _places_quietly(client) if p.reservation == token), None)
        _give_back(client, token, acquired)
        raise
    where = ", ".join(str(b) for b in held.boards)
    progress(f"took labgrid place {held.name} (board {where}" + (f", user {held.user}" if held.user else "") + ")")
    return held


def _held(client: LabgridClient, name: str, token: str, shown: str, request: PlaceRequest) -> HeldPlace:
    services = parse_network_services(shown)
    if not services:
        raise RknnError(ENV, f"{request.option}: labgrid place {name} has no NetworkService resource, so there is no "
                             f"address to reach the board at (export one with the board's address, port and "
                             f"username, and add it to the place: labgrid-client -p {name} add-match "
                             f"EXPORTER/GROUP/NetworkService)")
    proxied = [s for s in services if s.proxy_required]
    if proxied:
        raise RknnError(ENV, f"{request.option}: the NetworkService {proxied[0].address} of labgrid place {name} is "
                             f"reachable only through its exporter (proxy_required), and pytest-rknn connects "
                             f"directly; export an address this machine reaches")
    users = {s.username for s in services if s.username}
    boards = list(dict.fromkeys(BoardAddress(s.address, s.port) for s in services))
    return HeldPlace(client, name, token, boards, users.pop() if len(users) == 1 else None)


def _places_quietly(client: LabgridClient) -> List[PlaceInfo]:
    try:
        return client.places()
    except RknnError:
        return []


def _wait_for(client: LabgridClient, token: str, request: PlaceRequest, progress: Callable[[str], None]) -> None:
    """Until the reservation is allocated a place. `labgrid-client wait` polls the coordinator every
    second, which also keeps the reservation from expiring (a reservation nobody polls ends after 60 s)."""
    started = time.monotonic()
    deadline = started + request.wait
    with tempfile.TemporaryFile() as errors:
        waiter = subprocess.Popen(client.command("wait", token), stdout=subprocess.DEVNULL, stderr=errors,
                                  stdin=subprocess.DEVNULL, env=client.environment, start_new_session=True)
        try:
            report = started + FIRST_REPORT_SECONDS
            while True:
                try:
                    waiter.wait(timeout=max(0.01, min(report, deadline) - time.monotonic()))
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if now >= deadline:
                    raise RknnError(ENV, f"--rknn-labgrid-wait: {request.describe()} is still busy after "
                                         f"{request.wait:g} s ({_holders(client, request)}); run again later, "
                                         f"give a longer --rknn-labgrid-wait, or ask its holder to release it")
                progress(f"waiting for {request.describe()} ({_holders(client, request)}), "
                         f"{now - started:.0f} of {request.wait:g} s (--rknn-labgrid-wait)")
                report = now + REPORT_SECONDS
        finally:
            if waiter.poll() is None:
                os.killpg(waiter.pid, signal.SIGKILL)
                waiter.wait()
        if waiter.returncode != 0:
            errors.seek(0)
            raise client.failure(("wait", token), errors.read().decode(errors="replace"))


def _holders(client: LabgridClient, request: PlaceRequest) -> str:
    """`held by host/user`, or one such note per matching place."""
    notes = []
    for place in _places_quietly(client):
        if not request.matches(place):
            continue
        if place.acquired:
            note = f"held by {place.acquired}"
        elif place.reservation:
            note = "reserved by another run"
        else:
            note = "free"
        notes.append(note if request.place and not request.tags else f"{place.name} {note}")
    return "; ".join(notes) or "its holder is unknown"
