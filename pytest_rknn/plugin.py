"""pytest hooks only: options, markers, collection, fixtures, summary. The work lives elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import xdist_groups
from .items import RUNNER_KEY, RknnSpecFile, add_sections, attach_record, record_result
from .labgrid_session import hand_to_worker
from .options import add_options
from .recording import SessionRecords
from .result import TRACEBACK_SECTION
from .runner import SIM, RknnRunner
from .scheduler import JobScheduler
from .session import build_outputs, build_runner, build_scheduler, parse_toolkits
from .spec import SPEC_SUFFIX

RECORDS_KEY = pytest.StashKey[SessionRecords]()
SCHEDULER_KEY = pytest.StashKey[JobScheduler]()


def pytest_addhooks(pluginmanager):
    from . import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser):
    add_options(parser)


def pytest_configure(config):
    config.addinivalue_line("markers", "rknn: an RKNN model check (added to every spec item)")
    config.addinivalue_line("markers", "rknn_spec(spec): the spec (a path relative to the test file, or a dict) "
                                       "that the rknn_result fixture runs, once per toolkit version and backend")
    outputs = build_outputs(config, [t.version for t in parse_toolkits(config)])
    config.stash[RUNNER_KEY] = build_runner(config, outputs)
    config.stash[SCHEDULER_KEY] = build_scheduler(config, config.stash[RUNNER_KEY])
    config.stash[RECORDS_KEY] = SessionRecords(outputs)
    config.pluginmanager.register(config.stash[RECORDS_KEY], "rknn-records")


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    return xdist_groups.make_scheduler(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    hand_to_worker(node.config, node.workerinput)  # the labgrid place the controller took


def pytest_collect_file(file_path: Path, parent):
    if file_path.name.endswith(SPEC_SUFFIX):
        return RknnSpecFile.from_parent(parent, path=file_path)
    return None


def pytest_generate_tests(metafunc):
    if "rknn_result" in metafunc.fixturenames and metafunc.definition.get_closest_marker("rknn_spec"):
        runner = metafunc.config.stash[RUNNER_KEY]
        params = [(v, b) for v in runner.versions for b in runner.backends]
        metafunc.parametrize("rknn_result", params, indirect=True, ids=[f"{v}-{b}" for v, b in params])


def pytest_collection_finish(session):
    session.config.stash[SCHEDULER_KEY].collection_finished(session)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    item.config.stash[SCHEDULER_KEY].item_starting(item, nextitem)


@pytest.fixture(scope="session")
def rknn(pytestconfig) -> RknnRunner:
    """The session's runner: `rknn.run(spec, version)` returns a RunResult."""
    return pytestconfig.stash[RUNNER_KEY]


@pytest.fixture
def rknn_result(request, rknn):
    """The RunResult of the test's `@pytest.mark.rknn_spec(...)` spec for one toolkit version
    and backend (sim, and board when --rknn-board is given)."""
    marker = request.node.get_closest_marker("rknn_spec")
    if marker is None or not marker.args:
        pytest.fail("the rknn_result fixture needs @pytest.mark.rknn_spec('model.rknn.yaml') on the test",
                    pytrace=False)
    spec = marker.args[0]
    if isinstance(spec, (str, Path)):
        spec = Path(request.node.path).parent / spec
    version, backend = getattr(request, "param", (None, SIM))
    result = record_result(request.node, rknn.run(spec, version, backend))  # neither of them raises
    add_sections(request.node, result, "setup")
    return result


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    # An attribute of its own: pytest-xdist carries it to the controller, JUnit XML ignores it.
    attach_record(item, call, outcome.get_result())


def pytest_sessionfinish(session):
    records = session.config.stash[RECORDS_KEY]
    records.attempt("stopping the simulator jobs failed", session.config.stash[SCHEDULER_KEY].close)
    records.attempt("board clean-up failed", session.config.stash[RUNNER_KEY].close)
    records.finish(session)


def pytest_terminal_summary(terminalreporter, config):
    records = config.stash[RECORDS_KEY]
    summary = records.summary_lines()
    if summary:
        terminalreporter.section("rknn summary")
        for line in summary:
            terminalreporter.write_line(line)
    for line in records.written:
        terminalreporter.write_line(f"pytest-rknn: {line}")
    for trace in records.tracebacks:
        terminalreporter.section(TRACEBACK_SECTION, sep="-")
        terminalreporter.write_line(trace)
