import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MODELS = FIXTURES / "models"
IMAGES = FIXTURES / "data" / "images"


@pytest.fixture
def workdir(tmp_path):
    """A folder holding copies of the fixture models, for specs written by a test."""
    for model in MODELS.glob("*.onnx"):
        shutil.copy(model, tmp_path / model.name)
    return tmp_path


def write_spec(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.rknn.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def toolkit_cache():
    """The real cache of provisioned toolkit environments, shared with normal runs."""
    from pytest_rknn.toolkit.envs import default_cache_dir

    return default_cache_dir()
