"""The calibration list for int8 builds: absolute paths, one sample a line, one column per input."""

import numpy as np
import pytest

from conftest import FIXTURES

from pytest_rknn.errors import SpecError
from pytest_rknn.inputs import prepare_inputs
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


YOLO = FIXTURES / "yolo"


def yolo_spec(preprocess=True, letterbox=160):
    quantize = {"dataset": str(YOLO / "val/images/*.jpg")}  # photos of other sizes than the input
    if not preprocess:
        quantize["preprocess"] = False
    return spec_from_dict({"model": str(YOLO / "yolov5_heads.onnx"), "convert": {"quantize": quantize},
                           "inputs": {"images": {"images": str(YOLO / "val/images/*.jpg"), "letterbox": letterbox}}})


def test_calibration_images_get_the_preprocessing_of_the_input_they_feed(tmp_path):
    spec = yolo_spec()
    model = read_model_info(spec.model_path)
    rows = open(write_dataset(spec, model, tmp_path)).read().splitlines()
    evaluated = prepare_inputs(spec, model).samples
    assert len(rows) == len(evaluated) and all(row.endswith(".npy") for row in rows)
    for row, (sample,) in zip(rows, evaluated):
        array = np.load(row)
        # NCHW, as the toolkit wants a dataset .npy, of exactly the letterboxed pixels the build is tested on
        assert array.shape == (1, 3, 160, 160) and array.dtype == np.uint8
        assert np.array_equal(array, sample.transpose(0, 3, 1, 2))
    assert (evaluated[0][0][0, :, :5] == 114).all()  # 158x175, not square: the letterbox pads its sides


def test_preprocess_false_gives_the_toolkit_the_image_files(tmp_path):
    rows = open(write_dataset(yolo_spec(preprocess=False), read_model_info(YOLO / "yolov5_heads.onnx"),
                              tmp_path)).read().splitlines()
    assert rows == sorted(str(p) for p in (YOLO / "val/images").glob("*.jpg"))
    assert not (tmp_path / "calibration").exists()
