"""The Python a toolkit environment is made from (toolkit/base_python.py), with the machine's real
interpreters: a host Python the toolkit has no wheels for (3.13) must not end in uv's resolver error."""

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import uv

from conftest import FIXTURES, TOOLKIT_CACHE, UV_CACHE
from pytest_rknn.errors import ENV, RknnError
from pytest_rknn.toolkit import base_python
from pytest_rknn.toolkit.base_python import SUPPORTED, BasePython

REPO = Path(__file__).resolve().parent.parent
UV = uv.find_uv_bin()


def python_without_toolkit_wheels() -> BasePython:
    """A real Python 3.13 or newer on this machine (the image's pyenv has 3.13.0)."""
    candidates = [shutil.which(f"python3.{minor}") for minor in range(13, 16)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[3-9]*/bin/python3")))
    for path in filter(None, candidates):
        version = base_python.python_version(path)
        if version is not None and version > SUPPORTED[-1]:
            return BasePython(path, version)
    # Not a skip: these tests would never run. Neither Debian 12 nor PyPI has a Python 3.13 to install, so
    # .ci/setup cannot bring one; this machine image ships it (pyenv's 3.13.0).
    pytest.fail("no Python 3.13 or newer on this machine to stand for a host the toolkit has no wheels for "
                "(put one on PATH as python3.13, or in ~/.pyenv/versions)")


def test_a_host_python_that_fits_is_used_as_it_is():
    host = BasePython(sys.executable, sys.version_info[:2])
    assert base_python.choose("2.5.0", None, UV, True, host=host) == host


def test_a_host_python_without_toolkit_wheels_gets_a_supported_one_found_on_the_machine():
    host = python_without_toolkit_wheels()
    said = []
    chosen = base_python.choose("2.5.0", None, UV, True, host=host, progress=said.append)
    assert chosen.version in SUPPORTED and base_python.python_version(chosen.path) == chosen.version
    assert said == [f"this Python is {host.version[0]}.{host.version[1]}, which rknn-toolkit2 has no wheels for: "
                    f"the 2.5.0 environment is made from Python {chosen.version[0]}.{chosen.version[1]} "
                    f"({chosen.path})"]


def test_when_no_supported_python_is_found_one_env_line_says_which_would_work(monkeypatch, tmp_path):
    host = python_without_toolkit_wheels()
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to find on PATH, and no uv-managed Pythons
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "managed"))
    with pytest.raises(RknnError) as info:
        base_python.choose("2.5.0", None, UV, True, host=host)
    message = info.value.message
    assert info.value.failure_class == ENV and "\n" not in message
    assert f"this Python is 3.{host.version[1]} ({host.path})" in message
    assert "needs Python 3.9-3.12" in message and "--rknn-toolkit-python=/path/to/python3.12" in message


def test_a_given_python_is_checked_before_anything_is_installed(tmp_path):
    newer = python_without_toolkit_wheels()
    with pytest.raises(RknnError) as info:
        base_python.choose("2.5.0", newer.path, UV, True)
    assert info.value.failure_class == ENV
    assert f"--rknn-toolkit-python={newer.path} is Python 3.{newer.version[1]}" in info.value.message
    assert "needs Python 3.9-3.12" in info.value.message
    # a toolkit version pytest-rknn does not know may have wheels for it: then it is tried
    assert base_python.choose("9.9.9", newer.path, UV, False) == newer
    with pytest.raises(RknnError, match="no executable there"):
        base_python.choose("2.5.0", str(tmp_path / "missing"), UV, True)
    with pytest.raises(RknnError, match="did not answer as a Python does"):
        base_python.choose("2.5.0", shutil.which("true"), UV, True)
    given = base_python.choose("2.5.0", sys.executable, UV, True)
    assert given == BasePython(sys.executable, sys.version_info[:2])


def test_a_run_from_a_python_without_toolkit_wheels_builds_in_a_supported_one(tmp_path):
    """The whole plugin installed in a Python 3.13 environment, as a user on that Python would have it:
    the job is really built and simulated (no result cache), in an environment of a supported Python."""
    host = python_without_toolkit_wheels()
    venv = tmp_path / "venv"
    env = dict(os.environ, UV_CACHE_DIR=UV_CACHE, UV_PYTHON_DOWNLOADS="never")
    for command in ([UV, "venv", "-q", "--python", host.path, str(venv)],
                    [UV, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-e", str(REPO)]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    shutil.copy(FIXTURES / "models" / "cnn.onnx", tmp_path / "cnn.onnx")
    (tmp_path / "cnn.rknn.yaml").write_text("model: cnn.onnx\n")
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           f"--rknn-toolkit-cache={TOOLKIT_CACHE}", "--rknn-no-cache", "cnn.rknn.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f"this Python is 3.{host.version[1]}, which rknn-toolkit2 has no wheels for" in done.stdout
    assert "1 passed" in done.stdout
