import os
import shutil
from pathlib import Path

import pytest

from pytest_rknn.toolkit.envs import default_cache_dir

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MODELS = FIXTURES / "models"
IMAGES = FIXTURES / "data" / "images"


def pytest_configure(config):
    config.addinivalue_line("markers", "starts_process: a unit test that starts a small program of its own, never "
                                       "pytest-rknn's code (benchmarks/mutation_unit_tests.py lets it)")


@pytest.fixture
def workdir(tmp_path):
    """A folder holding copies of the fixture models, for specs written by a test."""
    for model in MODELS.glob("*.onnx"):
        shutil.copy(model, tmp_path / model.name)
    return tmp_path


def write_spec(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.rknn.yaml"
    path.write_text(text)
    return path


# Read at import, before pytester points HOME at a test folder: the real caches are shared with normal runs.
TOOLKIT_CACHE = default_cache_dir()
UV_CACHE = os.environ.get("UV_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "uv")


@pytest.fixture(scope="session")
def toolkit_cache():
    """The real cache of provisioned toolkit environments."""
    return TOOLKIT_CACHE


EXAMPLES = FIXTURES / "examples"


@pytest.fixture(scope="session")
def result_cache(tmp_path_factory):
    """The simulator result cache of this test session: shared by its runs, new in every session,
    so no test passes on what an earlier session (or older code) left in the user's cache."""
    return tmp_path_factory.mktemp("result-cache")


@pytest.fixture
def run_pytest(pytester, toolkit_cache, result_cache, tmp_path_factory, monkeypatch):
    """Run pytest with pytest-rknn in a subprocess, as a user would; returns (result, basetemp).
    The toolkit and uv caches are the real ones (pytester gives the subprocess its own HOME).
    `shared_cache=False` leaves the result cache to the run's own options and ini file."""
    monkeypatch.setenv("UV_CACHE_DIR", UV_CACHE)

    def run(*args, timeout=900, shared_cache=True):
        basetemp = tmp_path_factory.mktemp("run")
        cache = [f"--rknn-cache={result_cache}"] if shared_cache else []
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--basetemp={basetemp}",
                                               f"--rknn-toolkit-cache={toolkit_cache}", *cache, *args,
                                               timeout=timeout)
        return result, basetemp

    return run


# A toolkit Python whose worker starts a child in its own process group first: a stand-in for the processes
# the toolkit may start or leave. The version check (`python -c ...`) goes straight through.
CHILD_WRAPPER = """#!/bin/sh
case "$1" in
  */pytest_rknn/toolkit/worker.py)
    sleep 300 &
    echo $! > "$PWD/child.pid" ;;
esac
exec {python} "$@"
"""


def alive(pid) -> bool:
    """Running (a zombie waiting to be reaped is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def job_dirs(basetemp: Path, spec: str):
    """The worker job directories of one spec, one per toolkit version."""
    return {p.name: p for p in (basetemp / "rknn").glob(f"{spec}-*/*") if p.is_dir()}


BOARD_SUPPORT = Path(__file__).resolve().parent / "board"


@pytest.fixture(scope="session")
def test_board(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 whose Python has the rknnlite test double."""
    from board.testboard import start_test_board

    board = start_test_board(tmp_path_factory.mktemp("board"))
    yield board
    board.stop()


@pytest.fixture
def board_pytest(run_pytest, pytester, test_board, monkeypatch, tmp_path):
    """run_pytest against the test board: known_hosts in the run's HOME, a board personality of
    this test's own (registry, faults and trace shared with no other test), the registrar plugin
    that tells the rknnlite double which model each uploaded .rknn is, a private remote dir.

    run.board is this test's personality; run.personality(...) makes another one (an old runtime,
    another SoC) that shares its registry and trace."""
    ssh = pytester.path / ".ssh"
    ssh.mkdir(exist_ok=True)
    (ssh / "known_hosts").write_text(test_board.host_key_line + "\n")
    board = test_board.make_python()
    monkeypatch.setenv("PYTHONPATH", str(BOARD_SUPPORT))
    monkeypatch.setenv("RKNNLITE_DOUBLE_REGISTRY", str(board.registry))
    remote_parent = tmp_path / "board workdir"  # a space: every remote path must be quoted
    remote_parent.mkdir()

    def options(python=None, board=None, key=None, register=True, workdir=None):
        """The board options of a run; key=False leaves --rknn-ssh-key out."""
        found = [f"--rknn-board={board or f'{test_board.host}:{test_board.port}'}",
                 f"--rknn-board-python={python or run.board.python}",
                 f"--rknn-board-workdir={workdir or remote_parent}"]
        found += [f"--rknn-ssh-key={key or test_board.key_path}"] if key is not False else []
        return found + (["-p", "registrar"] if register else [])

    def run(*args, **kwargs):
        return run_pytest(*options(**kwargs), *args)

    run.options = options
    run.board = board
    run.personality = lambda **kwargs: test_board.make_python(registry=board.registry, **kwargs)
    run.remote_parent = remote_parent
    return run


CHROMIUM = Path("/usr/bin/chromium")


def run_chromium(page: Path, folder: Path, *flags: str, window=(1280, 2400), timeout=120):
    """Debian's headless chromium (installed by .ci/setup) on `page`, as root, with a fresh profile
    and no background networking (this machine's network is closed); `flags` say what it does."""
    import subprocess

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash .ci/setup` (it installs chromium)")
    profile = folder / "chromium-profile"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
               f"--window-size={window[0]},{window[1]}", *flags, page.as_uri()]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def render_in_chromium(page: Path, folder: Path, window=(1280, 2400)) -> Path:
    """A screenshot of `page` taken by headless chromium."""
    screenshot = folder / f"{page.stem}.png"
    done = run_chromium(page, folder, "--hide-scrollbars", f"--screenshot={screenshot}", window=window)
    assert screenshot.exists(), done.stderr[-2000:]
    return screenshot
