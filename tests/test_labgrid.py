"""Boards from a labgrid coordinator, end to end: a real labgrid-coordinator and labgrid-exporter on
127.0.0.1, the exporter exporting the loopback test board as a NetworkService, and pytest-rknn taking
it with --rknn-labgrid-place / --rknn-labgrid-tags through the real labgrid-client."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MODELS, write_spec

from pytest_rknn.board import labgrid_place
from pytest_rknn.board.labgrid_place import PlaceRequest, parse_network_services, parse_places, take_place
from pytest_rknn.errors import RknnError

# .ci/setup's second environment: pytest-rknn[labgrid], as a user of labgrid has it (labgrid stays out of .venv)
BIN = Path(__file__).resolve().parent.parent / ".venv-labgrid" / "bin"
PLACE = "rknn-loopback"
START_SECONDS = 30.0
STOP_SECONDS = 5.0


class Labgrid:
    """A coordinator and an exporter of the test board, and labgrid-client against them."""

    def __init__(self, folder: Path, coordinator: str):
        self.folder = folder
        self.coordinator = coordinator
        self.log = folder / "coordinator.log"
        self.processes = []

    def client(self, *args, check=True):
        done = subprocess.run([str(BIN / "labgrid-client"), "-x", self.coordinator, *args], capture_output=True,
                              text=True, timeout=30, env={k: v for k, v in os.environ.items()
                                                          if not k.startswith("LG_")})
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def place(self, name=PLACE):
        return {p.name: p for p in parse_places(self.client("-v", "places").stdout)}[name]

    def reservations(self):
        return self.client("reservations").stdout.strip()

    def acquisitions(self):
        """How many times the coordinator saw a place acquired so far."""
        return self.log.read_text().count("place acquired by")

    def start(self, *command, name):
        log = open(self.folder / f"{name}.log", "ab")
        process = subprocess.Popen([str(BIN / command[0]), *command[1:]], cwd=self.folder, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))  # its log read as it goes
        log.close()
        self.processes.append(process)
        return process

    def wait_until(self, what, condition):
        deadline = time.monotonic() + START_SECONDS
        while not condition():
            for process in self.processes:
                assert process.poll() is None, f"{process.args[0]} ended: {what}"
            assert time.monotonic() < deadline, f"not within {START_SECONDS:g} s: {what}"
            time.sleep(0.2)

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_SECONDS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def labgrid(test_board, tmp_path_factory):
    """The place rknn-loopback (tags soc=rk3588, lab=loopback): the test board's 127.0.0.1, port and user,
    exported by a real labgrid-exporter to a real labgrid-coordinator on 127.0.0.1; and the place
    `empty` (tag lab=empty) that has no NetworkService."""
    if not (BIN / "labgrid-coordinator").exists():
        pytest.fail(f"labgrid is not installed in {BIN} (run `bash .ci/setup`)")
    folder = tmp_path_factory.mktemp("labgrid")
    lab = Labgrid(folder, f"127.0.0.1:{free_port()}")
    try:
        lab.start("labgrid-coordinator", "--listen", lab.coordinator, name="coordinator")
        lab.wait_until("the coordinator answers", lambda: lab.client("places", check=False).returncode == 0)
        (folder / "exporter.yaml").write_text(f"rknn-board:\n  NetworkService:\n    address: {test_board.host}\n"
                                              f"    port: {test_board.port}\n    username: {test_board.user}\n")
        lab.start("labgrid-exporter", "-c", lab.coordinator, "-n", "loopback", "--hostname", "127.0.0.1",
                  str(folder / "exporter.yaml"), name="exporter")
        lab.wait_until("the exporter's NetworkService is there",
                       lambda: "loopback/rknn-board/NetworkService" in lab.client("resources").stdout)
        lab.client("-p", PLACE, "create")
        lab.client("-p", PLACE, "add-match", "loopback/rknn-board/NetworkService")
        lab.client("-p", PLACE, "set-tags", "soc=rk3588", "lab=loopback")
        lab.client("-p", "empty", "create")
        lab.client("-p", "empty", "set-tags", "lab=empty")
        yield lab
    finally:
        lab.stop()


def labgrid_options(board_pytest, lab, *more):
    """The board options of board_pytest with the labgrid place instead of --rknn-board."""
    options = [o for o in board_pytest.options() if not o.startswith("--rknn-board=")]
    return options + [f"--rknn-labgrid-coordinator={lab.coordinator}", f"--rknn-labgrid-client={BIN / 'labgrid-client'}",
                      *more]


def project(folder: Path, name: str) -> Path:
    """One spec of the fixture CNN; its board item times one warm-up and two runs."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(MODELS / "cnn.onnx", folder / "cnn.onnx")
    write_spec(folder, name, "model: cnn.onnx\nchecks: {latency: {runs: 2}}\n")
    return folder


def assert_free(lab, *names):
    """Neither acquired nor reserved (a reservation still waiting, or left over, would be listed)."""
    places = {p.name: p for p in parse_places(lab.client("-v", "places").stdout)}
    assert {n: (places[n].acquired, places[n].reservation) for n in names or [PLACE]} == dict.fromkeys(
        names or [PLACE], (None, None))
    assert lab.reservations() == ""


def test_a_run_takes_the_loopback_board_from_labgrid_and_gives_it_back(labgrid, board_pytest, run_pytest, pytester):
    """Under pytest-xdist too: the controller takes the place once and hands the board to its workers."""
    project(pytester.path, "cnn")
    before = labgrid.acquisitions()
    result, _ = run_pytest(*labgrid_options(board_pytest, labgrid, f"--rknn-labgrid-place={PLACE}"), "-n", "2")
    result.assert_outcomes(passed=2)
    exported = exporter_settings(labgrid)
    assert (f"pytest-rknn: took labgrid place {PLACE} (board 127.0.0.1:{exported['port']}, user "
            f"{exported['username']})" in result.stdout.str() + result.stderr.str())
    assert labgrid.acquisitions() == before + 1  # by the controller only, not again by each worker
    assert board_pytest.board.calls(), "the board item did not run on the test board"
    assert_free(labgrid)


class BackgroundRuns:
    """pytest-rknn runs against the labgrid place in subprocesses of their own, side by side (pytester's
    runs cannot overlap); each in folder NAME with one spec, its output in tmp_path/NAME.out."""

    def __init__(self, lab, board_pytest, pytester, toolkit_cache, result_cache, tmp_path):
        self.lab, self.board_pytest, self.pytester, self.tmp_path = lab, board_pytest, pytester, tmp_path
        self.caches = [f"--rknn-toolkit-cache={toolkit_cache}", f"--rknn-cache={result_cache}"]
        self.processes = {}

    def board_python(self, name, before=""):
        """A board Python that runs the shell lines `before`, then notes when each command starts and ends."""
        times, wrapper = self.tmp_path / f"{name}.times", self.tmp_path / f"{name}-python"
        wrapper.write_text(f'#!/bin/sh\n{before}echo "start $(date +%s.%N)" >> "{times}"\n'
                           f'"{self.board_pytest.board.python}" "$@"\nstatus=$?\n'
                           f'echo "end $(date +%s.%N)" >> "{times}"\nexit $status\n')
        wrapper.chmod(0o755)
        return wrapper

    def start(self, name, spec, python):
        project(self.pytester.path / name, spec)
        options = [o for o in labgrid_options(self.board_pytest, self.lab, f"--rknn-labgrid-place={PLACE}")
                   if not o.startswith("--rknn-board-python=")]
        # pytest-rknn[labgrid]'s environment: labgrid's own pytest plugin is loaded too, and the two get along.
        command = [str(BIN / "python"), "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={self.tmp_path / name}",
                   *self.caches, *options, f"--rknn-board-python={python}", name]
        with open(self.tmp_path / f"{name}.out", "wb") as out:
            self.processes[name] = subprocess.Popen(command, cwd=self.pytester.path, stdout=out,
                                                    stderr=subprocess.STDOUT, start_new_session=True)
        return self.processes[name]

    def output(self, name):
        return (self.tmp_path / f"{name}.out").read_text()

    def times(self, name):
        path, found = self.tmp_path / f"{name}.times", {"start": [], "end": []}
        for line in path.read_text().splitlines() if path.exists() else []:
            kind, _, when = line.partition(" ")
            found[kind].append(float(when))
        return found

    def until(self, what, condition, seconds=60):
        deadline = time.monotonic() + seconds
        while not condition():
            for name, process in self.processes.items():
                assert process.poll() is None, self.output(name)
            assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
            time.sleep(0.1)

    def stop(self):
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def background(labgrid, board_pytest, pytester, toolkit_cache, result_cache, tmp_path):
    runs = BackgroundRuns(labgrid, board_pytest, pytester, toolkit_cache, result_cache, tmp_path)
    yield runs
    runs.stop()


def test_a_second_run_waits_until_the_first_releases_the_place(labgrid, background, tmp_path):
    """The acceptance: run A acquires the place, and its board commands wait at a gate; run B starts and its
    reservation waits; the gate opens; B's first command on the board comes after A's last one ended,
    B said that it waited and for whom, and both pass."""
    gate = tmp_path / "gate"
    gated = f'n=0; while [ ! -e "{gate}" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done\n'
    first = background.start("a", "held", background.board_python("a", before=gated))
    background.until("run A acquires the place", lambda: labgrid.place().acquired is not None)
    holder = labgrid.place().acquired  # host/user: both runs are this machine and user
    second = background.start("b", "waiting", background.board_python("b"))
    background.until("run B's reservation waits", lambda: "state: waiting" in labgrid.reservations())
    gate.touch()
    for process in (first, second):
        process.wait(timeout=120)
    said = {name: background.output(name) for name in ("a", "b")}
    for name, process in (("a", first), ("b", second)):
        assert process.returncode == 0 and re.search(r"\b2 passed\b", said[name]), said[name]
    assert re.search(r"^plugins: .*labgrid", said["a"], re.M), said["a"]
    assert re.search(rf"^pytest-rknn: waiting for labgrid place {PLACE} \(held by {re.escape(holder)}\), \d+ of "
                     rf"600 s \(--rknn-labgrid-wait\)$", said["b"], re.M), said["b"]
    assert said["b"].index("waiting for labgrid place") < said["b"].index(f"took labgrid place {PLACE}")
    a_times, b_times = background.times("a"), background.times("b")
    assert a_times["start"] and b_times["start"], "a run never used the board"
    assert max(a_times["end"]) < min(b_times["start"]), "run B used the board while run A held it"
    assert_free(labgrid)


def test_a_run_stopped_with_sigterm_gives_the_place_back(labgrid, background, tmp_path):
    """A cancelled CI job gets SIGTERM (here its whole process group, while it works on the board): the
    session ends as with Ctrl-C, and the place is released and its reservation cancelled."""
    entered, go_on = tmp_path / "entered", tmp_path / "go-on"
    stuck = (f'touch "{entered}"; n=0; while [ ! -e "{go_on}" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); '
             f'done\n')
    run = background.start("c", "cancelled", background.board_python("c", before=stuck))
    background.until("the run is on the board", entered.exists)
    assert labgrid.place().acquired is not None
    os.killpg(run.pid, signal.SIGTERM)
    try:
        run.wait(timeout=60)
    finally:  # the board command it was in ends too, so no later test finds it still running
        go_on.touch()
    assert run.returncode != 0
    assert "could not give labgrid place" not in background.output("c")
    assert_free(labgrid)
    deadline = time.monotonic() + 10
    while not background.times("c")["end"] and time.monotonic() < deadline:
        time.sleep(0.1)


def test_labgrid_mistakes_are_one_line_before_anything_runs(labgrid, board_pytest, run_pytest, pytester):
    """An unreachable coordinator, an unknown place, a place without a NetworkService, a place that stays busy,
    --rknn-board with a labgrid place: each one usage-error line naming the option and the fix, in bounded
    time, no traceback, and nothing left reserved or acquired."""
    project(pytester.path, "cnn")
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        unreachable = f"127.0.0.1:{closed.getsockname()[1]}"
        cases = {
            "unreachable": ([f"--rknn-labgrid-coordinator={unreachable}", f"--rknn-labgrid-place={PLACE}"],
                            f"--rknn-labgrid-coordinator: no labgrid coordinator answers at {unreachable} (is "
                            f"labgrid-coordinator running there? give its HOST:PORT with "
                            f"--rknn-labgrid-coordinator, or set LG_COORDINATOR)"),
            "unknown": ([f"--rknn-labgrid-coordinator={labgrid.coordinator}", "--rknn-labgrid-place=no-such-board"],
                        f"--rknn-labgrid-place=no-such-board: no place on the labgrid coordinator "
                        f"{labgrid.coordinator} matches name=no-such-board; its places: empty (lab=empty), "
                        f"{PLACE} (lab=loopback, soc=rk3588) (create it (labgrid-client -x {labgrid.coordinator} "
                        f"-p no-such-board create) or name another)"),
            "no network service": ([f"--rknn-labgrid-coordinator={labgrid.coordinator}",
                                    "--rknn-labgrid-tags=lab=empty"],
                                   "--rknn-labgrid-tags=lab=empty: labgrid place empty has no NetworkService "
                                   "resource, so there is no address to reach the board at (export one with the "
                                   "board's address, port and username, and add it to the place: labgrid-client -p "
                                   "empty add-match EXPORTER/GROUP/NetworkService)"),
            "both": (["--rknn-board=127.0.0.1:22", f"--rknn-labgrid-place={PLACE}"],
                     "--rknn-board and --rknn-labgrid-place both say where the board is; give one of them "
                     "(--rknn-board for fixed addresses, --rknn-labgrid-place to take a board from labgrid)"),
            "a bad value of another option": ([f"--rknn-labgrid-coordinator={labgrid.coordinator}",
                                               f"--rknn-labgrid-place={PLACE}", "--rknn-cache-size=lots"],
                                              "--rknn-cache-size: 'lots' is not a size (write e.g. 2G, 500M or a "
                                              "number of bytes)"),
            "bad tags": (["--rknn-labgrid-tags=soc"],
                         "--rknn-labgrid-tags: 'soc' is not key=value (write e.g. "
                         "--rknn-labgrid-tags=soc=rk3588,lab=ci)"),
            "no client there": ([f"--rknn-labgrid-place={PLACE}", f"--rknn-labgrid-client={pytester.path / 'nothing'}"],
                                f"--rknn-labgrid-client={pytester.path / 'nothing'}: no executable there (give the "
                                f"path of labgrid-client, e.g. ~/.local/bin/labgrid-client from `pipx install "
                                f"labgrid`)"),
        }
        for case, (options, message) in cases.items():
            started = time.monotonic()
            result, _ = run_pytest(f"--rknn-labgrid-client={BIN / 'labgrid-client'}", *options, timeout=60)
            assert time.monotonic() - started < 30, case
            assert result.ret == pytest.ExitCode.USAGE_ERROR, (case, result.stdout.str(), result.stderr.str())
            assert f"ERROR: {message}" in result.stderr.lines, (case, result.stderr.str())
            assert "Traceback" not in result.stdout.str() + result.stderr.str(), case
            assert "took labgrid place" not in result.stderr.str(), case  # every check comes before the place
    assert_free(labgrid, "empty", PLACE)

    # Held by someone else for longer than --rknn-labgrid-wait: the reservation is cancelled again.
    labgrid.client("-p", PLACE, "acquire")
    try:
        started = time.monotonic()
        result, _ = run_pytest(*labgrid_options(board_pytest, labgrid, "--rknn-labgrid-tags=soc=rk3588",
                                                "--rknn-labgrid-wait=2"), timeout=60)
        assert time.monotonic() - started < 30
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        user = labgrid.place().acquired
        assert (f"ERROR: --rknn-labgrid-wait: a labgrid place with soc=rk3588 is still busy after 2 s ({PLACE} held "
                f"by {user}); run again later, give a longer --rknn-labgrid-wait, or ask its holder to release it"
                in result.stderr.lines), result.stderr.str()
        assert "Traceback" not in result.stdout.str() + result.stderr.str()
        assert labgrid.reservations() == ""
    finally:
        labgrid.client("-p", PLACE, "release")
    assert_free(labgrid)


def test_without_labgrid_client_the_message_says_what_to_install(monkeypatch, tmp_path):
    """This Python's environment (.venv) has no labgrid, and PATH has none either."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert labgrid_place.find_client() is None
    with pytest.raises(RknnError) as raised:
        take_place(PlaceRequest("127.0.0.1:20408", "board-1"), print)
    assert raised.value.failure_class == "ENV"
    assert raised.value.message == (f"--rknn-labgrid-place=board-1: labgrid-client is not installed, neither next to "
                                    f"{sys.executable} nor on PATH (pip install 'pytest-rknn[labgrid]', or give "
                                    f"--rknn-labgrid-client=PATH)")


def test_places_and_network_services_are_read_from_labgrid_clients_output():
    shown = """Place 'lab-3':
  tags: lab=ci, soc=rk3588
  matches:
    exp/board/NetworkService
  acquired: ci-7/runner
  acquired resources:
    exp/board/NetworkService/NetworkService
  created: 2026-12-01 20:32:34.906016
  reservation: KTV2Y1B3C9
Acquired resource 'NetworkService' (exp/board/NetworkService/NetworkService):
  {'acquired': 'lab-3',
   'avail': True,
   'cls': 'NetworkService',
   'params': {'address': '192.168.1.10',
              'extra': {'proxy': 'exp', 'proxy_required': False},
              'username': 'root'}}
Acquired resource 'USBSerialPort' (exp/board/USBSerialPort/USBSerialPort):
  {'acquired': 'lab-3', 'avail': True, 'cls': 'USBSerialPort', 'params': {'port': '/dev/ttyUSB0'}}
"""
    place, = parse_places(shown)
    assert (place.name, place.tags, place.acquired, place.reservation) == (
        "lab-3", {"lab": "ci", "soc": "rk3588"}, "ci-7/runner", "KTV2Y1B3C9")
    service, = parse_network_services(shown)
    assert (service.address, service.port, service.username, service.proxy_required) == (
        "192.168.1.10", 22, "root", False)
    assert PlaceRequest("x", None, {"soc": "rk3588"}).matches(place)
    assert not PlaceRequest("x", "lab", {"soc": "rk3588"}).matches(place)  # a name matches whole, not a prefix


def exporter_settings(lab):
    """The NetworkService the exporter exports: address, port, username."""
    return dict(re.findall(r"^ {4}(\w+): (\S+)$", (lab.folder / "exporter.yaml").read_text(), re.M))
