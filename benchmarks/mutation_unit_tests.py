"""pytest plugin for mutation runs (benchmarks/mutation.py): keeps the fast unit tests only.

Enabled with `-p mutation_unit_tests` (this folder on sys.path); by hand, e.g.
    PYTHONPATH=benchmarks .venv/bin/pytest tests -p mutation_unit_tests -q

A unit test here runs in this process: no pytest in a subprocess, no toolkit worker or simulator, no
SSH test board, no browser or build. Tests that need such things by fixture are left out by the
fixture's name, the few that start a process some other way by their file or name. A selected test
that starts a process anyway fails the session (see the end of this file): it would exercise the
installed pytest_rknn, not the mutant, and make the run slow. A test marked `starts_process` may: it
starts a small program of its own (a stand-in for a toolkit environment's Python), never pytest_rknn.
"""

import sys

# Fixtures of the end-to-end tests (tests/conftest.py, pytester).
SLOW_FIXTURES = {"run_pytest", "board_pytest", "test_board", "toolkit_cache", "pytester"}

# Node id prefixes of tests that start processes without one of those fixtures.
SLOW_TESTS = (
    "tests/board/",  # the SSH test board (its own module fixture), ssh-keygen, sshd
    "tests/test_base_python.py",  # real interpreters and uv
    "tests/test_envs.py::test_pip_configuration_is_passed_on_to_uv",  # pip config
    "tests/test_envs.py::test_an_environment_without_the_toolkit_is_refused_with_the_fix",
    "tests/test_envs.py::test_a_version_that_cannot_be_provisioned_fails_once_with_its_log",
    "tests/test_fixtures.py",  # runs the fixture scripts
    "tests/test_packaging.py",  # uv build
    "tests/test_report_browser.py",  # chromium
    "tests/test_report_html.py::test_a_browser_renders_the_page",  # chromium
    "tests/test_validate_early.py::test_the_known_targets_are_what_the_installed_toolkit_accepts",  # toolkit
)


def is_unit_test(item) -> bool:
    return not (SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))) and not item.nodeid.startswith(SLOW_TESTS)


def pytest_collection_modifyitems(config, items):
    slow = [item for item in items if not is_unit_test(item)]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if is_unit_test(item)]


# The guard: which selected test started a process. An audit hook cannot be removed, so it only
# looks while a test runs.
_running = []
_started = {}


def _audit(event, args):
    if _running and event in ("subprocess.Popen", "os.posix_spawn", "os.exec"):
        _started.setdefault(_running[-1], repr(args)[:200])


sys.addaudithook(_audit)


_allowed = set()  # tests marked starts_process: they start a small program of their own, never pytest_rknn


def pytest_collection_finish(session):
    _allowed.update(item.nodeid for item in session.items if item.get_closest_marker("starts_process"))


def pytest_runtest_logstart(nodeid):
    if nodeid not in _allowed:
        _running.append(nodeid)


def pytest_runtest_logfinish(nodeid):
    _running.clear()


def pytest_sessionfinish(session):
    if _started:
        lines = "\n".join(f"  {nodeid}: {what}" for nodeid, what in _started.items())
        print(f"\nmutation_unit_tests: these selected tests started a process; add them to SLOW_TESTS:\n{lines}",
              file=sys.stderr)
        session.exitstatus = 1
