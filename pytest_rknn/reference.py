"""The onnxruntime reference: the ONNX model run on exactly the arrays the NPU gets."""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from .errors import SpecError
from .inputs import InputSet
from .onnx_model import ModelInfo
from .spec import Spec


def to_model_feed(spec: Spec, model: ModelInfo, inputs: InputSet, sample: List[np.ndarray]) -> dict:
    """What onnxruntime must see for one sample: NCHW, the model's dtype, and the
    mean/std normalisation that the NPU applies to its own input."""
    feed = {}
    for index, (tensor, array, layout) in enumerate(zip(model.inputs, sample, inputs.layouts)):
        if layout == "nhwc":
            array = array.transpose(0, 3, 1, 2)
        dtype = np.dtype(tensor.dtype)
        if spec.reference.apply_mean_std and dtype.kind == "f":
            array = _normalise(array.astype(np.float64), _per_input(spec.convert.mean_values, index),
                               _per_input(spec.convert.std_values, index))
        feed[tensor.name] = np.ascontiguousarray(array).astype(dtype)
    return feed


def _per_input(values, index) -> Optional[List[float]]:
    if values is None or index >= len(values):
        return None
    return values[index]


def _normalise(array: np.ndarray, mean, std) -> np.ndarray:
    if mean is None and std is None:
        return array
    channel_axis = 1 if array.ndim >= 2 else 0
    channels = array.shape[channel_axis]

    def per_channel(values, default):
        if values is None:
            return default
        values = np.asarray(values, dtype=np.float64)
        if values.size == 1 or values.size != channels:
            return values.reshape(-1)[0]
        shape = [1] * array.ndim
        shape[channel_axis] = channels
        return values.reshape(shape)

    return (array - per_channel(mean, 0.0)) / per_channel(std, 1.0)


def run_reference(spec: Spec, model: ModelInfo, inputs: InputSet) -> List[List[np.ndarray]]:
    """Outputs per sample, in the model's output order."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a bad model
        raise SpecError(spec.path, "model", f"onnxruntime cannot load {model.path.name}: {exc}".splitlines()[0],
                        "check the model with onnx.checker") from None
    names = [t.name for t in model.outputs]
    outputs = []
    for label, sample in zip(inputs.labels, inputs.samples):
        feed = to_model_feed(spec, model, inputs, sample)
        try:
            outputs.append([np.asarray(o) for o in session.run(names, feed)])
        except Exception as exc:
            raise SpecError(spec.path, "inputs", f"onnxruntime rejects sample '{label}': {str(exc).splitlines()[0]}",
                            "make the inputs match the model") from None
    return outputs
