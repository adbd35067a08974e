"""pytest hooks only: options, markers, collection, fixtures, summary. The work lives elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from .items import RUNNER_KEY, RknnSpecFile
from .options import add_options
from .report import summary_row, summary_table
from .runner import SIM, RknnRunner
from .session import build_runner
from .spec import SPEC_SUFFIX


def pytest_addhooks(pluginmanager):
    from . import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser):
    add_options(parser)


def pytest_configure(config):
    config.addinivalue_line("markers", "rknn: an RKNN model check (added to every spec item)")
    config.addinivalue_line("markers", "rknn_spec(spec): the spec (a path relative to the test file, or a dict) "
                                       "that the rknn_result fixture runs, once per toolkit version and backend")
    config.stash[RUNNER_KEY] = build_runner(config)


def pytest_collect_file(file_path: Path, parent):
    if file_path.name.endswith(SPEC_SUFFIX):
        return RknnSpecFile.from_parent(parent, path=file_path)
    return None


def pytest_generate_tests(metafunc):
    if "rknn_result" in metafunc.fixturenames and metafunc.definition.get_closest_marker("rknn_spec"):
        runner = metafunc.config.stash[RUNNER_KEY]
        params = [(v, b) for v in runner.versions for b in runner.backends]
        metafunc.parametrize("rknn_result", params, indirect=True, ids=[f"{v}-{b}" for v, b in params])


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
    result = rknn.run(spec, version, backend)
    request.node.user_properties.append(("rknn", summary_row(result)))
    return result


def pytest_sessionfinish(session):
    session.config.stash[RUNNER_KEY].close()


def pytest_terminal_summary(terminalreporter, config):
    # Rows travel in user_properties, so reports from pytest-xdist workers bring theirs.
    reports = terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
    rows = [value for r in reports if r.when == "call" for key, value in r.user_properties if key == "rknn"]
    if rows:
        terminalreporter.section("rknn summary")
        for line in summary_table(rows):
            terminalreporter.write_line(line)
