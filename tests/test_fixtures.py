"""The committed fixtures are exactly what the scripts in fixtures/ make."""

import subprocess
import sys

import pytest

from conftest import FIXTURES


@pytest.mark.parametrize("script, committed, pattern", [
    ("make_models.py", FIXTURES / "models", "*.onnx"),
    ("make_images.py", FIXTURES / "data" / "images", "*.png"),
])
def test_the_scripts_remake_the_committed_files_byte_for_byte(tmp_path, script, committed, pattern):
    subprocess.run([sys.executable, str(FIXTURES / script), str(tmp_path)], check=True, capture_output=True)
    made = sorted(p.name for p in tmp_path.glob(pattern))
    assert made == sorted(p.name for p in committed.glob(pattern))
    for name in made:
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name
