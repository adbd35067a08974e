"""One Python environment per rknn-toolkit2 version, provisioned with uv on first use and cached.

uv hard-links packages from its cache, so torch (0.75 GB) is stored once for all versions.
The machine's pip configuration (find-links, indexes) is passed on to uv, which does
not read it itself.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import ENV, RknnError
from . import base_python

DEFAULT_VERSION = "2.5.0"
KNOWN_VERSIONS = ("2.2.0", "2.3.0", "2.3.2", "2.5.0")
TORCH_PIN = "torch==2.13.0"  # CPU build; works although the wheels' metadata says torch<=2.4.0
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# Overrides per version (RKNN-FACTS.md): onnx>1.18 breaks load_onnx ('onnx' has no 'mapping'),
# RKNN() needs pkg_resources (setuptools<81), the toolkit wants numpy<=1.26.4 and protobuf<=4.25.4.
_COMMON = ["setuptools<81", "numpy<=1.26.4", "protobuf<=4.25.4", TORCH_PIN]
PINS: Dict[str, List[str]] = {
    "2.2.0": _COMMON + ["onnx==1.14.1", "onnxruntime==1.16.0"],
    "2.3.0": _COMMON + ["onnx<=1.18.0"],
    "2.3.2": _COMMON + ["onnx<=1.18.0"],
    "2.5.0": _COMMON + ["onnx<=1.18.0"],
}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ToolkitRequest:
    version: str
    python: Optional[str] = None  # a user's existing environment, or None to provision one


def is_version(text: str) -> bool:
    """A toolkit version as pip names it: three numbers, e.g. 2.5.0 (a suffix like 2.5.0b1 is allowed)."""
    return re.fullmatch(r"\d+\.\d+\.\d+\w*", text) is not None


def parse_toolkit_option(value: str) -> List[ToolkitRequest]:
    """`2.3.2,2.5.0` or `2.3.2=/path/to/python,2.5.0`."""
    requests: List[ToolkitRequest] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        version, equals, python = (s.strip() for s in part.partition("="))
        if not is_version(version):
            raise RknnError(ENV, f"--rknn-toolkit: '{version}' is not a version like 2.5.0 "
                                 f"(write --rknn-toolkit=2.3.2,2.5.0 or 2.3.2=/path/to/python)")
        if any(r.version == version for r in requests):
            raise RknnError(ENV, f"--rknn-toolkit: version {version} is named twice")
        if equals and not python:
            raise RknnError(ENV, f"--rknn-toolkit: '{part}' names no Python after '=' "
                                 f"(write {version}=/path/to/python, or {version} to let pytest-rknn provision it)")
        requests.append(ToolkitRequest(version, python or None))
    if not requests:
        raise RknnError(ENV, "--rknn-toolkit: no version given (for example --rknn-toolkit=2.5.0)")
    return requests


def pip_sources() -> List[str]:
    """uv arguments for the indexes and wheel folders that pip is configured with here."""
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    settings: Dict[str, List[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        settings.setdefault(name, []).extend(value.strip().strip("'\"").split())
    for env_name, name in (("PIP_FIND_LINKS", "find-links"), ("PIP_INDEX_URL", "index-url"),
                           ("PIP_EXTRA_INDEX_URL", "extra-index-url")):
        if os.environ.get(env_name):
            settings.setdefault(name, []).extend(os.environ[env_name].split())
    args: List[str] = []
    for location in dict.fromkeys(settings.get("find-links", [])):
        args += ["--find-links", location]
    for url in list(dict.fromkeys(settings.get("index-url", [])))[:1]:
        args += ["--index-url", url]
    for url in dict.fromkeys(settings.get("extra-index-url", [])):
        args += ["--extra-index-url", url]
    return args


def _has_local_torch(find_links: List[str], python: Tuple[int, int]) -> bool:
    version = TORCH_PIN.split("==")[1]
    for location in find_links:
        folder = Path(location[7:] if location.startswith("file://") else location)
        if folder.is_dir() and any(folder.glob(f"torch-{version}*-cp{python[0]}{python[1]}-*.whl")):
            return True
    return False


def torch_source_args(sources: List[str], torch_index: Optional[str],
                      python: Tuple[int, int] = (sys.version_info[0], sys.version_info[1])) -> List[str]:
    """Where the CPU torch comes from: the user's setting, a local wheel for the environment's Python
    (major, minor), or PyTorch's CPU index. Plain PyPI would give a CUDA build of several GB."""
    if torch_index:
        return ["--find-links", torch_index] if Path(torch_index).is_dir() else ["--extra-index-url", torch_index]
    find_links = [sources[i + 1] for i, a in enumerate(sources) if a == "--find-links"]
    if _has_local_torch(find_links, python):
        return []
    return ["--extra-index-url", TORCH_CPU_INDEX]


def env_dir(cache_dir: Path, version: str, python: Tuple[int, int]) -> Path:
    """The environment's folder: one per toolkit version, pins and base Python (major, minor)."""
    pins = json.dumps([version, PINS.get(version, _COMMON), list(python)])
    tag = hashlib.sha256(pins.encode()).hexdigest()[:8]
    return cache_dir / f"rknn-toolkit2-{version}-py{python[0]}{python[1]}-{tag}"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-rknn"


def installed_version(python: str) -> Optional[str]:
    """The rknn-toolkit2 version in an environment, without importing rknn (that imports torch)."""
    code = "import importlib.metadata as m; print(m.version('rknn-toolkit2'))"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


class Provisioner:
    """Finds or makes the Python for each requested toolkit version; remembers failures."""

    def __init__(self, cache_dir: Path, torch_index: Optional[str] = None, progress: Progress = lambda m: None,
                 base_python: Optional[str] = None):
        self.cache_dir = Path(cache_dir)
        self.torch_index = torch_index
        self.progress = progress
        self.base_python = base_python  # --rknn-toolkit-python; None: this Python, or one found (base_python.py)
        self._pythons: Dict[str, str] = {}
        self._errors: Dict[str, RknnError] = {}

    def python_for(self, request: ToolkitRequest) -> str:
        version = request.version
        if version in self._errors:
            raise self._errors[version]
        if version not in self._pythons:
            try:
                self._pythons[version] = (self._check_user_python(request) if request.python
                                          else self._provision(version))
            except RknnError as exc:
                self._errors[version] = exc
                raise
        return self._pythons[version]

    def _check_user_python(self, request: ToolkitRequest) -> str:
        assert request.python is not None  # only for a request that names its Python
        python = os.path.expanduser(request.python)
        if not os.access(python, os.X_OK):
            raise RknnError(ENV, f"--rknn-toolkit={request.version}={request.python}: no executable Python there")
        found = installed_version(python)
        if found is None:
            raise RknnError(ENV, f"--rknn-toolkit={request.version}={request.python}: rknn-toolkit2 is not installed "
                                 f"in that environment (install it, or drop '={request.python}' to let pytest-rknn "
                                 f"provision one)")
        if found != request.version:
            raise RknnError(ENV, f"--rknn-toolkit={request.version}={request.python}: that environment has "
                                 f"rknn-toolkit2 {found}, not {request.version}")
        return python

    def _provision(self, version: str) -> str:
        import uv

        base = base_python.choose(version, self.base_python, uv.find_uv_bin(), version in PINS,
                                  progress=self.progress)
        target = env_dir(self.cache_dir, version, base.version)
        python = str(target / "bin" / "python")
        ready = target / ".ready"
        if ready.is_file():
            return python
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / f".lock-{version}", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # parallel pytest-xdist workers wait for one provisioner
            if ready.is_file():
                return python
            self._install(version, target, python, base)
            ready.write_text(json.dumps({"version": version, "pins": PINS.get(version, _COMMON)}))
        return python

    def _install(self, version: str, target: Path, python: str, base: base_python.BasePython) -> None:
        import shutil

        import uv

        uv_bin = uv.find_uv_bin()
        if version not in PINS:
            self.progress(f"rknn-toolkit2 {version} is not one of the versions pytest-rknn knows "
                          f"({', '.join(KNOWN_VERSIONS)}); trying the 2.5.0 pins")
        shutil.rmtree(target, ignore_errors=True)
        log_path = self.cache_dir / f"provision-{version}.log"
        started = time.monotonic()
        self.progress(f"provisioning rknn-toolkit2 {version} in {target} (first use; cached afterwards)")
        env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
        overrides = self.cache_dir / f"overrides-{version}.txt"
        overrides.write_text("\n".join(PINS.get(version, PINS[DEFAULT_VERSION])) + "\n")
        sources = pip_sources()
        commands = [
            [uv_bin, "venv", str(target), "--python", base.path, "--quiet"],
            [uv_bin, "pip", "install", "--python", python, *sources,
             *torch_source_args(sources, self.torch_index, base.version),
             "--index-strategy", "unsafe-best-match", "--override", str(overrides),
             f"rknn-toolkit2=={version}", "setuptools<81"],
        ]
        with open(log_path, "w") as log:
            for command in commands:
                log.write("$ " + " ".join(command) + "\n")
                returncode, last_line = self._run_logged(command, log, env)
                if returncode != 0:
                    shutil.rmtree(target, ignore_errors=True)
                    raise RknnError(ENV, f"cannot provision rknn-toolkit2 {version}: {last_line} "
                                         f"(full log: {log_path}; or use --rknn-toolkit={version}=/path/to/python)")
        found = installed_version(python)
        if found != version:
            raise RknnError(ENV, f"provisioned rknn-toolkit2 {version} but the environment reports {found} "
                                 f"(log: {log_path})")
        self.progress(f"rknn-toolkit2 {version} ready in {time.monotonic() - started:.0f} s")

    def _run_logged(self, command: List[str], log, env: Dict[str, str]) -> Tuple[int, str]:
        """Run one command into the log, passing uv's summary lines on as progress.
        Returns the exit status and the last line it printed (uv's reason when it fails)."""
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        last_line = ""
        assert process.stdout is not None  # stdout=PIPE
        for line in process.stdout:
            log.write(line)
            if line.strip():
                last_line = line.strip()
            if line.startswith(("Resolved", "Prepared", "Installed", "Downloading")):
                self.progress("  " + line.strip())
        return process.wait(), last_line
