"""Command-line options and their ini twins, declared once."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import pytest

from .result_cache import DEFAULT_MAX_BYTES, parse_size
from .toolkit.envs import DEFAULT_VERSION, default_cache_dir, is_version


@dataclass(frozen=True)
class Option:
    flag: str  # --rknn-toolkit; the ini twin is rknn_toolkit
    help: str
    default: Any = None
    kind: Callable = str
    is_flag: bool = False
    metavar: Optional[str] = None

    @property
    def ini(self) -> str:
        return self.flag[2:].replace("-", "_")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number of seconds (write e.g. 300)") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text} is not a positive number (write e.g. 300)")
    return value


def _version(text: str) -> str:
    if not is_version(text.strip()):
        raise ValueError(f"'{text}' is not a toolkit version like 2.3.2 (write e.g. --rknn-compare-to=2.3.2)")
    return text.strip()


def _url_or_folder(text: str) -> str:
    if "://" not in text and not Path(text).expanduser().is_dir():
        raise ValueError(f"'{text}' is neither a URL nor an existing folder (give an index URL such as "
                         f"https://download.pytorch.org/whl/cpu, or a folder that holds the torch wheel)")
    return text


def _budget(text: str) -> float:
    """Seconds, or `off` (or 0) for none."""
    if text.strip().lower() in ("off", "0", "0.0"):
        return 0.0
    try:
        return _positive_float(text)
    except ValueError:
        raise ValueError(f"'{text}' is neither a number of seconds nor off (write e.g. 120, or off)") from None


def _job_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a whole number of jobs (write e.g. 2, or 1 for one job at a time)") from None
    if value < 1:
        raise ValueError(f"{text} is not a positive number of jobs (write e.g. 2, or 1 for one job at a time)")
    return value


def _core_mask(text: str) -> str:
    from .board.session import CORE_MASKS

    if text not in CORE_MASKS:
        raise ValueError(f"'{text}' is not one of {', '.join(CORE_MASKS)}")
    return text


def _labgrid_tags(text: str) -> dict:
    from .board.labgrid_place import parse_tags

    return parse_tags(text)


OPTIONS = [
    Option("--rknn-toolkit", f"rknn-toolkit2 versions to test, comma separated; VERSION=/path/to/python uses an "
                             f"existing environment (default: {DEFAULT_VERSION})", DEFAULT_VERSION,
           metavar="VERSIONS"),
    Option("--rknn-toolkit-cache", "where provisioned toolkit environments are kept "
                                   "(default: $XDG_CACHE_HOME/pytest-rknn)", None, metavar="DIR"),
    Option("--rknn-cache", "keep the results of simulator jobs in DIR, keyed by what decides them, and reuse them "
                           "instead of starting a worker (default: the results folder in --rknn-toolkit-cache)",
           None, metavar="DIR"),
    Option("--rknn-no-cache", "neither look up nor store simulator results: every job starts its worker", False,
           is_flag=True),
    Option("--rknn-cache-size", "the most the result cache may hold; the least recently used entries go first "
                                "(default: 2G)", DEFAULT_MAX_BYTES, parse_size, metavar="SIZE"),
    Option("--rknn-toolkit-python", "the Python that provisioned toolkit environments are made from; it must be "
                                    "3.9-3.12, which rknn-toolkit2 has wheels for (default: this Python when it is "
                                    "one of those, else one found on the machine)", None, metavar="PYTHON"),
    Option("--rknn-torch-index", "index URL or wheel folder for the CPU torch that the toolkit needs "
                                 "(default: a local wheel from pip's find-links, else PyTorch's CPU index)",
           None, _url_or_folder, metavar="URL_OR_DIR"),
    Option("--rknn-timeout", "seconds one build+simulate job may take before it is killed (default: 600)",
           600.0, _positive_float, metavar="SECONDS"),
    Option("--rknn-jobs", "simulator jobs run at the same time, ahead of their items; about 1 GB of memory each; "
                          "1 runs them one by one as the items come (default: the number of cores)",
           os.cpu_count() or 1, _job_count, metavar="N"),
    Option("--rknn-toolkit-verbose", "keep the toolkit's debug lines in each job's log.txt (every build is verbose, for its layer "
                                    "table; without this option its debug lines are dropped)",
           False, is_flag=True),
    Option("--rknn-no-localise", "do not run the toolkit's per-layer accuracy analysis on a simulator item that fails "
                                 "ACCURACY (it builds the model again; see README, Localisation)", False, is_flag=True),
    Option("--rknn-localise-timeout", "seconds the per-layer analysis of a failed item may take (its own build "
                                      "included) before it is killed; the item's outcome stays (default: 300)",
           300.0, _positive_float, metavar="SECONDS"),
    Option("--rknn-reduce-budget", "seconds for reducing a simulator BUILD or CRASH that names no node to the node "
                                   "that causes it (sub-models bisected, each a simulator job); off or 0: no reduction "
                                   "(default: 120)", 120.0, _budget, metavar="SECONDS"),
    Option("--rknn-board", "RK3588 boards to run the built models on over SSH, comma separated "
                           "(each spec and version goes to one of them)", None, metavar="HOST[:PORT]"),
    Option("--rknn-board-user", "SSH user on the boards (default: from ~/.ssh/config, else your user name)",
           None, metavar="USER"),
    Option("--rknn-ssh-key", "private key for the boards (default: the SSH agent, ~/.ssh/config, ~/.ssh/id_*)",
           None, metavar="PATH"),
    Option("--rknn-board-python", "Python on the board that has numpy and rknn-toolkit-lite2 (default: python3)",
           "python3", metavar="COMMAND"),
    Option("--rknn-board-workdir", "where the private per-session work dir is made on the board (default: /tmp)",
           "/tmp", metavar="DIR"),
    Option("--rknn-core-mask", "NPU cores for RKNNLite.init_runtime: auto, 0, 1, 2, 0_1, 0_1_2, all (default: auto)",
           "auto", _core_mask, metavar="MASK"),
    Option("--rknn-board-timeout", "seconds one board job may take before its process group is killed "
                                   "(default: 300)", 300.0, _positive_float, metavar="SECONDS"),
    Option("--rknn-board-connect-timeout", "seconds to wait for a board to answer (default: 10)", 10.0,
           _positive_float, metavar="SECONDS"),
    Option("--rknn-board-insecure", "accept any board host key instead of verifying it against known_hosts",
           False, is_flag=True),
    Option("--rknn-labgrid-place", "take the board from this labgrid place instead of --rknn-board: reserved, "
                                   "acquired for the session and released at the end (needs "
                                   "pytest-rknn[labgrid])", None, metavar="NAME"),
    Option("--rknn-labgrid-tags", "take the board from a labgrid place with these tags (with or without "
                                  "--rknn-labgrid-place)", None, _labgrid_tags, metavar="KEY=VALUE[,KEY=VALUE]"),
    Option("--rknn-labgrid-coordinator", "the labgrid coordinator to take the place from (default: "
                                         "$LG_COORDINATOR, else 127.0.0.1:20408)", None, metavar="HOST:PORT"),
    Option("--rknn-labgrid-client", "the labgrid-client program (default: the one next to this Python, else on "
                                    "PATH)", None, metavar="PATH"),
    Option("--rknn-labgrid-wait", "seconds to wait for the labgrid place while another run holds it (default: 600)",
           600.0, _positive_float, metavar="SECONDS"),
    Option("--rknn-baseline", "compare every item's metrics with the baseline recorded in DIR (one JSON file per "
                              "spec; keep it in git)", None, metavar="DIR"),
    Option("--rknn-baseline-update", "record this run's metrics into the --rknn-baseline DIR instead of comparing",
           False, is_flag=True),
    Option("--rknn-baseline-strict", "fail an item (SPEC) that has no baseline entry for its model and config, "
                                     "instead of warning (for nightly gates)", False, is_flag=True),
    Option("--rknn-compare-to", "upgrade gate: compare every other version's items with this version's results "
                                "(from this run, else the baseline, else run it), within the spec's `gate:`",
           None, _version, metavar="VERSION"),
    Option("--rknn-json", "write every item's result, metrics, fingerprint and timings to this JSON file",
           None, metavar="PATH"),
    Option("--rknn-html", "write a self-contained HTML report (tables, charts, detection overlays) to this file",
           None, metavar="PATH"),
    Option("--rknn-keep-outputs", "keep inputs.npz, outputs.npz and overlays in the job folders of passed items too "
                                  "(default: removed at the end of the session; failed items keep them)",
           False, is_flag=True),
]


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("rknn", "RKNN model checks (pytest-rknn)")
    for option in OPTIONS:
        if option.is_flag:
            group.addoption(option.flag, action="store_true", default=None, help=option.help)
            parser.addini(option.ini, option.help, type="bool", default=option.default)
        else:
            group.addoption(option.flag, default=None, metavar=option.metavar, help=option.help)
            parser.addini(option.ini, option.help, default=None)


def _find(flag: str) -> Option:
    return next(o for o in OPTIONS if o.flag == flag)


def _given(config: pytest.Config, option: Option) -> Tuple[Any, str, Path]:
    """The value as given (None if not given), where it came from, and the folder a relative path is
    relative to: the command line wins over the ini file."""
    value = config.getoption(option.ini)
    if value is not None:
        return value, option.flag, Path(config.invocation_params.dir)
    try:
        value = config.getini(option.ini)
    except (ValueError, pytest.UsageError) as exc:  # a bool ini option that is not true or false
        raise pytest.UsageError(f"ini option {option.ini}: {exc} (write true or false)") from None
    return value, f"ini option {option.ini}", config.inipath.parent if config.inipath else config.rootpath


def _refuse_empty(option: Option, value: Any, source: str) -> None:
    """`--rknn-toolkit=` or `rknn_toolkit =`: given, but empty. Falling back to the default would
    silently run something the user did not ask for."""
    if isinstance(value, str) and not value.strip():
        example = f"{option.flag}={option.metavar}" if source == option.flag else f"{option.ini} = {option.metavar}"
        default = f"the default ({option.default})" if option.default is not None else "none"
        raise pytest.UsageError(f"{source} is empty: give a value ({example}), or leave the option out for {default}")


def get_option(config: pytest.Config, flag: str):
    """The command line wins over the ini file, the ini file over the default. A value given empty,
    or one that the option's kind refuses, is a usage error that names the option."""
    option = _find(flag)
    value, source, _ = _given(config, option)
    if option.is_flag:
        return bool(value)
    if value is None:
        return option.default
    _refuse_empty(option, value, source)
    try:
        return option.kind(value)
    except ValueError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None


def get_path_option(config: pytest.Config, flag: str) -> Optional[Path]:
    """A path option: relative to the current directory on the command line, to the ini file's folder in it."""
    option = _find(flag)
    value, source, base = _given(config, option)
    if value is None:
        return None
    _refuse_empty(option, value, source)
    return (Path(base) / Path(value).expanduser()).resolve()


def get_file_option(config: pytest.Config, flag: str) -> Optional[Path]:
    """A path option for a file that pytest-rknn writes at the end (a report): refused now if it
    cannot be written, rather than after all the work."""
    path = get_path_option(config, flag)
    if path is None:
        return None
    source = _given(config, _find(flag))[1]
    if path.is_dir():
        example = path / f"rknn-report.{flag.rsplit('-', 1)[-1]}"
        raise pytest.UsageError(f"{source}: {path} is a folder; give a file path, e.g. {flag}={example}")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise pytest.UsageError(f"{source}: cannot write {path}, because {blocking} is a file, not a folder")
    return path


def cache_dir(config: pytest.Config) -> Path:
    path = get_path_option(config, "--rknn-toolkit-cache")
    if path is not None and path.exists() and not path.is_dir():
        source = _given(config, _find("--rknn-toolkit-cache"))[1]
        raise pytest.UsageError(f"{source}: {path} is a file; give a folder for the toolkit environments")
    return path if path is not None else default_cache_dir()


def result_cache_dir(config: pytest.Config) -> Optional[Path]:
    """Where simulator results are cached; None with --rknn-no-cache."""
    if get_option(config, "--rknn-no-cache"):
        return None
    path = get_path_option(config, "--rknn-cache")
    if path is not None and path.exists() and not path.is_dir():
        raise pytest.UsageError(f"{_given(config, _find('--rknn-cache'))[1]}: {path} is a file; give a folder for "
                                f"the result cache (or --rknn-no-cache)")
    return path if path is not None else cache_dir(config) / "results"
