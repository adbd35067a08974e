"""The onnxruntime reference sees what the NPU sees: NCHW, the model's dtype, mean/std applied."""

import numpy as np
import onnxruntime as ort

from pytest_rknn.inputs import prepare_inputs
from pytest_rknn.onnx_model import read_model_info
from pytest_rknn.reference import run_reference
from pytest_rknn.spec import spec_from_dict

from conftest import IMAGES, MODELS


def run(workdir, **keys):
    spec = spec_from_dict({"model": "cnn.onnx", **keys}, base_dir=workdir)
    model = read_model_info(spec.model_path)
    inputs = prepare_inputs(spec, model)
    return inputs, run_reference(spec, model, inputs)


def test_nhwc_uint8_images_are_transposed_and_normalised_like_the_npu_does(workdir):
    inputs, outputs = run(workdir, inputs={"images": {"images": f"{IMAGES}/img_0[01].png"}},
                          convert={"mean_values": [[10, 20, 30]], "std_values": [[255, 128, 64]]})
    image = inputs.samples[1][0].astype(np.float32).transpose(0, 3, 1, 2)
    mean = np.array([10, 20, 30], np.float32).reshape(1, 3, 1, 1)
    std = np.array([255, 128, 64], np.float32).reshape(1, 3, 1, 1)
    direct = ort.InferenceSession(str(MODELS / "cnn.onnx")).run(None, {"images": (image - mean) / std})
    np.testing.assert_allclose(outputs[1][0], direct[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[1][1], direct[1], rtol=1e-5, atol=1e-6)


def test_a_model_that_normalises_itself_gets_the_raw_input(workdir):
    inputs, outputs = run(workdir, inputs={"images": {"random": [0, 255], "layout": "nchw"}},
                          convert={"mean_values": [[0, 0, 0]], "std_values": [[255, 255, 255]]},
                          reference={"apply_mean_std": False})
    direct = ort.InferenceSession(str(MODELS / "cnn.onnx")).run(None, {"images": inputs.samples[0][0]})
    np.testing.assert_allclose(outputs[0][0], direct[0], rtol=1e-5)
