"""Builds the session's runner from the pytest configuration."""

from __future__ import annotations

import sys

import pytest

from .board.connection import SshSettings, parse_board_option
from .board.session import BoardPool, BoardSession
from .errors import RknnError
from .options import cache_dir, get_option
from .runner import RknnRunner
from .toolkit.envs import Provisioner, parse_toolkit_option


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


def build_runner(config: pytest.Config) -> RknnRunner:
    try:
        toolkits = parse_toolkit_option(str(get_option(config, "--rknn-toolkit")))
    except RknnError as exc:
        raise pytest.UsageError(exc.message) from None
    provisioner = Provisioner(cache_dir(config), get_option(config, "--rknn-torch-index"),
                              progress=terminal_progress(config))
    return RknnRunner(
        provisioner,
        toolkits,
        work_root=lambda: config._tmp_path_factory.mktemp("rknn", numbered=False),
        timeout=get_option(config, "--rknn-timeout"),
        toolkit_verbose=get_option(config, "--rknn-toolkit-verbose"),
        boards=build_board_pool(config),
        on_artifact=config.hook.pytest_rknn_artifact_built,
    )


def build_board_pool(config: pytest.Config) -> BoardPool:
    boards = get_option(config, "--rknn-board")
    try:
        addresses = parse_board_option(boards) if boards else []
    except RknnError as exc:
        raise pytest.UsageError(exc.message) from None
    settings = SshSettings(user=get_option(config, "--rknn-board-user"), key_path=get_option(config, "--rknn-ssh-key"),
                           insecure=get_option(config, "--rknn-board-insecure"),
                           connect_timeout=get_option(config, "--rknn-board-connect-timeout"))

    def make_session(address):
        return BoardSession(address, settings, python=get_option(config, "--rknn-board-python"),
                            workdir_parent=get_option(config, "--rknn-board-workdir"),
                            core_mask=get_option(config, "--rknn-core-mask"),
                            timeout=get_option(config, "--rknn-board-timeout"))

    return BoardPool(addresses, make_session)
