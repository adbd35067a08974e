"""Builds the session's runner from the pytest configuration."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from typing import List

import pytest

from .baseline import BaselineStore
from .board.connection import SshSettings, insecure_warning, parse_board_option
from .board.session import BoardPool, BoardSession
from .comparisons import Comparisons
from .errors import RknnError, RknnWarning
from .labgrid_session import labgrid_boards, labgrid_request
from .options import cache_dir, get_file_option, get_option, get_path_option, result_cache_dir
from .recording import OutputSettings
from .result_cache import ResultCache
from .runner import RknnRunner
from .scheduler import JobScheduler, threads_per_process, xdist_worker_count
from .toolkit.envs import Provisioner, ToolkitRequest, parse_toolkit_option


def terminal_progress(config: pytest.Config):
    """A function that prints one progress line now, even while output is captured."""

    def progress(message: str) -> None:
        capture = config.pluginmanager.getplugin("capturemanager")
        terminal = config.pluginmanager.getplugin("terminalreporter")
        line = f"pytest-rknn: {message}"
        if capture is None or terminal is None:  # e.g. inside a pytest-xdist worker
            print(line, file=sys.stderr, flush=True)
            return
        with capture.global_and_fixture_disabled():
            terminal.ensure_newline()
            terminal.write_line(line)

    return progress


def build_outputs(config: pytest.Config, versions: List[str]) -> OutputSettings:
    """Baseline, upgrade gate and report options, checked together."""
    directory = get_path_option(config, "--rknn-baseline")
    update = get_option(config, "--rknn-baseline-update")
    if update and directory is None:
        raise pytest.UsageError("--rknn-baseline-update needs --rknn-baseline=DIR, the folder of baseline files "
                                "to write (for example --rknn-baseline=rknn-baseline)")
    if directory is not None and directory.exists() and not directory.is_dir():
        raise pytest.UsageError(f"--rknn-baseline: {directory} is a file; give a folder for the baseline files")
    compare_to = get_option(config, "--rknn-compare-to")
    if compare_to and versions == [compare_to]:
        raise pytest.UsageError(f"--rknn-compare-to={compare_to} is the only version tested, so there is nothing to "
                                f"compare; test the new version too, e.g. --rknn-toolkit={compare_to},NEW")
    strict = get_option(config, "--rknn-baseline-strict")
    if strict and directory is None:
        raise pytest.UsageError("--rknn-baseline-strict needs --rknn-baseline=DIR, the folder of baseline files "
                                "every item must have an entry in")
    baseline = BaselineStore(directory, config.rootpath) if directory is not None else None
    return OutputSettings(baseline, update, compare_to, get_file_option(config, "--rknn-json"),
                          get_file_option(config, "--rknn-html"), strict)


def build_runner(config: pytest.Config, outputs: OutputSettings) -> RknnRunner:
    toolkits = parse_toolkits(config)
    provisioner = Provisioner(cache_dir(config), get_option(config, "--rknn-torch-index"),
                              progress=terminal_progress(config),
                              base_python=get_option(config, "--rknn-toolkit-python"))
    return RknnRunner(
        provisioner,
        toolkits,
        # _tmp_path_factory: set by pytest's tmp_path plugin, not declared on Config
        work_root=lambda: config._tmp_path_factory.mktemp("rknn", numbered=False),  # type: ignore[attr-defined]
        timeout=get_option(config, "--rknn-timeout"),
        toolkit_verbose=get_option(config, "--rknn-toolkit-verbose"),
        boards=build_board_pool(config),
        on_artifact=config.hook.pytest_rknn_artifact_built,
        comparisons=Comparisons(outputs.baseline, outputs.compare_to, [t.version for t in toolkits],
                                updating_baseline=outputs.update_baseline, strict_baseline=outputs.strict_baseline),
        result_cache=ResultCache(result_cache_dir(config), get_option(config, "--rknn-cache-size")),
        keep_outputs=get_option(config, "--rknn-keep-outputs"),
        localise=not get_option(config, "--rknn-no-localise"),
        localise_timeout=get_option(config, "--rknn-localise-timeout"),
        reduce_budget=get_option(config, "--rknn-reduce-budget"),
    )


def build_scheduler(config: pytest.Config, runner: RknnRunner) -> JobScheduler:
    """--rknn-jobs threads for the machine, shared between pytest-xdist workers; under xdist the jobs are
    handed over as items start, since a worker runs only some of the items it collected."""
    workers = xdist_worker_count(config)
    threads = threads_per_process(get_option(config, "--rknn-jobs"), workers)
    return JobScheduler(runner.build_ahead, threads, lazy=workers is not None, stop_running=runner.stop_workers)


def parse_toolkits(config: pytest.Config) -> List[ToolkitRequest]:
    try:
        requests = parse_toolkit_option(str(get_option(config, "--rknn-toolkit")))
    except RknnError as exc:
        raise pytest.UsageError(exc.message) from None
    for request in requests:
        if request.python and not _is_program(request.python):
            raise pytest.UsageError(f"--rknn-toolkit={request.version}={request.python}: no executable Python there "
                                    f"(give the python of an environment that has rknn-toolkit2 {request.version}, "
                                    f"or write {request.version} alone to let pytest-rknn provision one)")
    return requests


def _is_program(command: str) -> bool:
    """A path to an executable, or a command found on PATH."""
    return shutil.which(os.path.expanduser(command)) is not None


def build_board_pool(config: pytest.Config) -> BoardPool:
    boards = get_option(config, "--rknn-board")
    labgrid = labgrid_request(config, boards)
    try:
        addresses = parse_board_option(boards) if boards else []
    except RknnError as exc:
        raise pytest.UsageError(exc.message) from None
    settings = SshSettings(user=get_option(config, "--rknn-board-user"), key_path=get_option(config, "--rknn-ssh-key"),
                           insecure=get_option(config, "--rknn-board-insecure"),
                           connect_timeout=get_option(config, "--rknn-board-connect-timeout"))
    key = settings.key_path
    if (addresses or labgrid) and key and not os.path.isfile(os.path.expanduser(key)):
        raise pytest.UsageError(f"--rknn-ssh-key: no such file: {key} (give the private key the boards accept, or "
                                f"leave the option out to use the SSH agent and ~/.ssh/config)")

    # Read now, so a bad value is a usage error before any item runs, not a failure inside each one.
    python, workdir = get_option(config, "--rknn-board-python"), get_option(config, "--rknn-board-workdir")
    core_mask, timeout = get_option(config, "--rknn-core-mask"), get_option(config, "--rknn-board-timeout")
    if labgrid is not None:  # last: waiting for a place is the slow part, the checks above come first
        addresses, user = labgrid_boards(config, labgrid, terminal_progress(config))
        settings = dataclasses.replace(settings, user=settings.user or user)  # --rknn-board-user still wins
    if settings.insecure and addresses and not hasattr(config, "workerinput"):  # once, not again per xdist worker
        config.issue_config_time_warning(RknnWarning(insecure_warning(addresses)), stacklevel=2)

    def make_session(address):
        return BoardSession(address, settings, python=python, workdir_parent=workdir, core_mask=core_mask,
                            timeout=timeout)

    return BoardPool(addresses, make_session)
