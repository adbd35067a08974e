"""The Python a provisioned toolkit environment is made from: one the toolkit has wheels for.

rknn-toolkit2 2.2.0 to 2.5.0 ship x86_64 wheels up to cp312 and none for 3.13 (pip's own index
query, per Python version), and the worker that runs in the environment needs Python 3.9 or newer.
So a host Python outside 3.9-3.12 would end in uv's resolver error: instead the environment is made
from --rknn-toolkit-python, else from this Python when it fits, else from one found on the machine
(uv's interpreter search: PATH, pyenv's versions on PATH, uv-managed ones; never a download),
else the item fails with one ENV line that says which Pythons would work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from ..errors import ENV, RknnError

Version = Tuple[int, int]
SUPPORTED: Tuple[Version, ...] = ((3, 9), (3, 10), (3, 11), (3, 12))
OPTION = "--rknn-toolkit-python"
WHY = "rknn-toolkit2 has no wheels for 3.13 or newer, and the worker needs 3.9 or newer"


@dataclass(frozen=True)
class BasePython:
    path: str
    version: Version

    @property
    def tag(self) -> str:
        return f"py{self.version[0]}{self.version[1]}"


def named(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def supported_range() -> str:
    return f"{named(SUPPORTED[0])}-{named(SUPPORTED[-1])}"


def python_version(path: str) -> Optional[Version]:
    """The (major, minor) a Python reports, or None when `path` is no Python that answers."""
    code = "import sys; print(sys.version_info[0], sys.version_info[1])"
    try:
        done = subprocess.run([path, "-c", code], capture_output=True, text=True, timeout=30)
        major, minor = (int(n) for n in done.stdout.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return (major, minor) if done.returncode == 0 else None


def find_on_machine(uv_bin: str) -> Optional[BasePython]:
    """A supported Python on this machine, by uv's interpreter search (no downloads)."""
    wanted = f">={named(SUPPORTED[0])},<{SUPPORTED[-1][0]}.{SUPPORTED[-1][1] + 1}"
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    try:
        done = subprocess.run([uv_bin, "python", "find", "--system", "--no-python-downloads", wanted],
                              capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    path = done.stdout.strip()
    version = python_version(path) if done.returncode == 0 and path else None
    return BasePython(path, version) if version in SUPPORTED else None


def choose(toolkit: str, given: Optional[str], uv_bin: str, known_toolkit: bool,
           host: Optional[BasePython] = None, progress: Callable[[str], None] = lambda m: None) -> BasePython:
    """The Python to make rknn-toolkit2 `toolkit`'s environment from. `host` is the Python pytest runs in."""
    host = host or BasePython(sys.executable, (sys.version_info[0], sys.version_info[1]))
    if given:
        return _given(toolkit, os.path.expanduser(given), known_toolkit)
    if host.version in SUPPORTED:
        return host
    found = find_on_machine(uv_bin)
    if found is None:
        raise RknnError(ENV, f"cannot make the rknn-toolkit2 {toolkit} environment: this Python is "
                             f"{named(host.version)} ({host.path}) and the environment needs Python "
                             f"{supported_range()} ({WHY}); none of those was found on this machine (install one, "
                             f"e.g. python3.12 from your distribution or `uv python install 3.12`, then run again "
                             f"or give {OPTION}=/path/to/python3.12)")
    progress(f"this Python is {named(host.version)}, which rknn-toolkit2 has no wheels for: the {toolkit} "
             f"environment is made from Python {named(found.version)} ({found.path})")
    return found


def _given(toolkit: str, path: str, known_toolkit: bool) -> BasePython:
    if not os.access(path, os.X_OK) or os.path.isdir(path):
        raise RknnError(ENV, f"{OPTION}={path}: no executable there (give the path of a Python "
                             f"{supported_range()}, e.g. /usr/bin/python3.11)")
    version = python_version(path)
    if version is None:
        raise RknnError(ENV, f"{OPTION}={path}: that program did not answer as a Python does "
                             f"(give the path of a Python {supported_range()})")
    if known_toolkit and version not in SUPPORTED:
        raise RknnError(ENV, f"{OPTION}={path} is Python {named(version)}; the rknn-toolkit2 {toolkit} environment "
                             f"needs Python {supported_range()} ({WHY}; give one of those)")
    return BasePython(path, version)
