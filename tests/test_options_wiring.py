"""Every option reaches the part of the session that acts on it, from the command line and from the ini
file alike: the session is configured in-process (pytest_configure builds the runner, the scheduler and the
report settings, nothing starts) and the value is read back where it is used. Each row's value differs
from the option's default, so an option that is dropped on the way leaves the default and fails its row.

What each part then does with its value is tested where the behaviour is decided (timeouts, budgets, the
cache, boards, baselines: see tests/README.md, Options)."""

from pathlib import Path

import pytest

from pytest_rknn.items import RUNNER_KEY
from pytest_rknn.labgrid_session import labgrid_request
from pytest_rknn.options import OPTIONS
from pytest_rknn.plugin import RECORDS_KEY, SCHEDULER_KEY

KEY = "id_test"  # a file in the test folder: --rknn-ssh-key must name one


def runner(config):
    return config.stash[RUNNER_KEY]


def outputs(config):
    return config.stash[RECORDS_KEY].settings


def board(config):
    """The session the first board would get (made, not started)."""
    return runner(config).board.pool.session_for("cnn-2.5.0")


def relative(path):
    return None if path is None else Path(path).relative_to(Path.cwd()).as_posix()


# flag, the value given, what the session holds then (read from the configured session), and what that is
ROWS = [
    ("--rknn-toolkit", "2.3.2,2.5.0", lambda c: runner(c).versions, ["2.3.2", "2.5.0"]),
    ("--rknn-toolkit-cache", "envs", lambda c: relative(runner(c).simulator.provisioner.cache_dir), "envs"),
    ("--rknn-cache", "results", lambda c: relative(runner(c).result_cache.root), "results"),
    ("--rknn-no-cache", True, lambda c: runner(c).result_cache.enabled, False),
    ("--rknn-cache-size", "3M", lambda c: runner(c).result_cache.max_bytes, 3 * 1024 ** 2),
    ("--rknn-toolkit-python", "python3.11", lambda c: runner(c).simulator.provisioner.base_python, "python3.11"),
    ("--rknn-torch-index", "https://torch.invalid/cpu", lambda c: runner(c).simulator.provisioner.torch_index,
     "https://torch.invalid/cpu"),
    ("--rknn-timeout", "77", lambda c: runner(c).simulator.timeout, 77.0),
    ("--rknn-jobs", "3", lambda c: c.stash[SCHEDULER_KEY].threads, 3),
    ("--rknn-toolkit-verbose", True, lambda c: runner(c).simulator.toolkit_verbose, True),
    ("--rknn-no-localise", True, lambda c: runner(c).localise, False),
    ("--rknn-localise-timeout", "33", lambda c: runner(c).localise_timeout, 33.0),
    ("--rknn-reduce-budget", "off", lambda c: runner(c).evidence.reduce_budget, 0.0),
    ("--rknn-board", "127.0.0.1:2222", lambda c: [str(a) for a in runner(c).board.pool.addresses],
     ["127.0.0.1:2222"]),
    ("--rknn-board-user", "npu", lambda c: board(c).connection.settings.user, "npu"),
    ("--rknn-ssh-key", KEY, lambda c: board(c).connection.settings.key_path, KEY),
    ("--rknn-board-python", "/opt/py/bin/python3", lambda c: board(c).python, "/opt/py/bin/python3"),
    ("--rknn-board-workdir", "/run/npu", lambda c: board(c).workdir_parent, "/run/npu"),
    ("--rknn-core-mask", "0_1", lambda c: board(c).core_mask, "NPU_CORE_0_1"),
    ("--rknn-board-timeout", "44", lambda c: board(c).timeout, 44.0),
    ("--rknn-board-connect-timeout", "5", lambda c: board(c).connection.settings.connect_timeout, 5.0),
    ("--rknn-board-insecure", True, lambda c: board(c).connection.settings.insecure, True),
    ("--rknn-baseline", "bl", lambda c: relative(getattr(outputs(c).baseline, "directory", None)), "bl"),
    ("--rknn-baseline-update", True, lambda c: (outputs(c).update_baseline, runner(c).comparisons.updating_baseline),
     (True, True)),
    ("--rknn-baseline-strict", True,
     lambda c: (outputs(c).strict_baseline, runner(c).comparisons.strict_baseline), (True, True)),
    ("--rknn-compare-to", "2.3.2", lambda c: (outputs(c).compare_to, runner(c).comparisons.compare_to),
     ("2.3.2", "2.3.2")),
    ("--rknn-json", "out/r.json", lambda c: relative(outputs(c).json_path), "out/r.json"),
    ("--rknn-html", "out/r.html", lambda c: relative(outputs(c).html_path), "out/r.html"),
    ("--rknn-keep-outputs", True, lambda c: runner(c).keep_outputs, True),
]
# What some rows need besides their own option, on the same side (command line or ini file).
NEEDS = {
    "--rknn-board-user": {"--rknn-board": "127.0.0.1:2222"}, "--rknn-ssh-key": {"--rknn-board": "127.0.0.1:2222"},
    "--rknn-board-python": {"--rknn-board": "127.0.0.1:2222"}, "--rknn-board-workdir": {"--rknn-board": "127.0.0.1:2222"},
    "--rknn-core-mask": {"--rknn-board": "127.0.0.1:2222"}, "--rknn-board-timeout": {"--rknn-board": "127.0.0.1:2222"},
    "--rknn-board-connect-timeout": {"--rknn-board": "127.0.0.1:2222"},
    "--rknn-board-insecure": {"--rknn-board": "127.0.0.1:2222"},
    "--rknn-baseline-update": {"--rknn-baseline": "bl"}, "--rknn-baseline-strict": {"--rknn-baseline": "bl"},
    "--rknn-compare-to": {"--rknn-toolkit": "2.3.2,2.5.0"},
}
# Read by labgrid_request, which take the place when the session is configured; read here without a coordinator.
LABGRID_ROWS = [
    ("--rknn-labgrid-place", "rk3588-a", lambda r: r.place, "rk3588-a"),
    ("--rknn-labgrid-tags", "soc=rk3588,lab=b", lambda r: r.tags, {"soc": "rk3588", "lab": "b"}),
    ("--rknn-labgrid-coordinator", "lab.invalid:20408", lambda r: r.coordinator, "lab.invalid:20408"),
    ("--rknn-labgrid-client", "/opt/lg/labgrid-client", lambda r: r.client, "/opt/lg/labgrid-client"),
    ("--rknn-labgrid-wait", "9", lambda r: r.wait, 9.0),
]
LABGRID_NEEDS = {flag: {"--rknn-labgrid-place": "rk3588-a"} for flag, *_ in LABGRID_ROWS
                 if flag not in ("--rknn-labgrid-place", "--rknn-labgrid-tags")}


def test_every_option_has_a_row_here():
    assert sorted(flag for flag, *_ in ROWS + LABGRID_ROWS) == sorted(option.flag for option in OPTIONS)


def _given(options, where):
    """(command-line arguments, ini file text) giving these options on one side."""
    if where == "command line":
        return [flag if value is True else f"{flag}={value}" for flag, value in options.items()], ""
    lines = [f"{flag[2:].replace('-', '_')} = {'true' if value is True else value}" for flag, value in options.items()]
    return [], "[pytest]\n" + "\n".join(lines) + "\n"


def _configured(pytester, options, where):
    (pytester.path / KEY).write_text("not read before a board is reached\n")
    args, ini = _given(options, where)
    pytester.makeini(ini or "[pytest]\n")
    return pytester.parseconfigure(*args)


@pytest.mark.parametrize("where", ["command line", "ini file"])
@pytest.mark.parametrize("flag, value, read, expected", ROWS, ids=[row[0] for row in ROWS])
def test_each_option_reaches_the_part_that_uses_it(pytester, where, flag, value, read, expected):
    needs = NEEDS.get(flag, {})
    assert read(_configured(pytester, needs, where)) != expected  # the default differs: the row can fail
    assert read(_configured(pytester, dict(needs, **{flag: value}), where)) == expected


@pytest.mark.parametrize("where", ["command line", "ini file"])
@pytest.mark.parametrize("flag, value, read, expected", LABGRID_ROWS, ids=[row[0] for row in LABGRID_ROWS])
def test_each_labgrid_option_reaches_the_place_request(pytester, where, flag, value, read, expected):
    needs = LABGRID_NEEDS.get(flag, {})
    args, ini = _given(dict(needs, **{flag: value}), where)
    pytester.makeini(ini or "[pytest]\n")
    request = labgrid_request(pytester.parseconfig(*args), None)
    assert request is not None and read(request) == expected
    args, ini = _given(needs, where)
    pytester.makeini(ini or "[pytest]\n")
    default = labgrid_request(pytester.parseconfig(*args), None)
    assert default is None or read(default) != expected
