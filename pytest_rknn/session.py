"""Builds the session's runner from the pytest configuration."""

from __future__ import annotations

import sys

import pytest

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
    )
