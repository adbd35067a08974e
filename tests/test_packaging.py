"""The package as a user installs it: a wheel built (through the sdist) from this tree holds every module of the plugin."""

import os
import subprocess
import zipfile
from pathlib import Path

import uv

from conftest import UV_CACHE

REPO = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_module_and_registers_the_plugin(tmp_path):
    done = subprocess.run([uv.find_uv_bin(), "build", "-q", "--out-dir", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, UV_CACHE_DIR=UV_CACHE))
    assert done.returncode == 0, done.stderr[-2000:]
    wheel, = tmp_path.glob("pytest_rknn-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "pytest_rknn").rglob("*.py")}
    assert len(modules) > 40
    assert sorted(modules - names) == []
    assert "rknn = pytest_rknn.plugin" in entry_points
    assert not [n for n in names if n.startswith(("tests/", "fixtures/", "benchmarks/"))]
