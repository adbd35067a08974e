"""The calibration list for int8 builds: absolute paths, one sample a line, one column per input."""

import numpy as np
import pytest

from pytest_rknn.errors import SpecError
from pytest_rknn.onnx_model import read_model_info
from pytest_rknn.spec import spec_from_dict
from pytest_rknn.toolkit.calibration import write_dataset


def calibration(workdir, model, dataset):
    spec = spec_from_dict({"model": model, "convert": {"quantize": {"dataset": dataset}}}, base_dir=workdir)
    return write_dataset(spec, read_model_info(spec.model_path), workdir)


def test_a_multi_input_model_gets_one_column_per_input_in_model_order(workdir):
    (workdir / "kp").mkdir()
    (workdir / "desc").mkdir()
    for i in range(2):
        np.save(workdir / "kp" / f"{i}.npy", np.zeros((1, 64, 2), np.int64))
        np.save(workdir / "desc" / f"{i}.npy", np.zeros((1, 64, 256), np.float32))
    path = calibration(workdir, "two_input.onnx", {"descriptors": "desc/*.npy", "keypoints": "kp/*.npy"})
    assert open(path).read().splitlines() == [f"{workdir}/kp/{i}.npy {workdir}/desc/{i}.npy" for i in range(2)]


def test_a_single_input_glob_becomes_absolute_paths(workdir):
    (workdir / "calib").mkdir()
    for name in ("b.png", "a.png"):
        (workdir / "calib" / name).write_bytes(b"")
    path = calibration(workdir, "cnn.onnx", "calib/*.png")
    assert open(path).read().splitlines() == [f"{workdir}/calib/a.png", f"{workdir}/calib/b.png"]


@pytest.mark.parametrize("dataset, words", [
    ("kp/*.npy", "the model has several inputs"),
    ({"keypoints": "kp/*.npy"}, "no calibration data for input 'descriptors'"),
    ({"keypoints": "kp/*.npy", "descriptors": "kp/0.npy"}, "different numbers of files ('keypoints' 2, 'descriptors' 1)"),
    ({"keypoint": "kp/*.npy"}, "the model has no input 'keypoint'"),
])
def test_calibration_mistakes_are_spec_errors(workdir, dataset, words):
    (workdir / "kp").mkdir()
    for i in range(2):
        np.save(workdir / "kp" / f"{i}.npy", np.zeros((1, 64, 2), np.int64))
    with pytest.raises(SpecError) as info:
        calibration(workdir, "two_input.onnx", dataset)
    assert words in info.value.message and info.value.field.startswith("convert.quantize.dataset")
