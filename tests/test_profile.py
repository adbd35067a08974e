"""A build's profile from its recorded layer table and the ONNX model: where each layer runs (a CPU
layer with its ONNX op type and the tensor `convert.op_target` takes), the estimated cycles and memory,
the .rknn size; what of it goes into baselines, and its JSON round trip. The tables below are the
`layers` records of real rknn-toolkit2 2.5.0 simulator builds of the fixture models."""

import json

from conftest import MODELS

from pytest_rknn.diagnosis.profile import CpuLayer, Profile, build_profile
from pytest_rknn.onnx_model import ModelInfo, OpInfo, read_model_info

COLUMNS = ("id", "op_type", "dtype", "target", "input_shapes", "output_shape", "cycles_ddr", "cycles_npu",
           "cycles_total", "rw_kb", "full_name", "reason")
FALLBACK = "AveragePool count_include_pad=0, fallback to cpu"


def _record(rows, internal_memory, weight_memory):
    return {"layers": [dict(zip(COLUMNS, row)) for row in rows], "internal_memory": internal_memory,
            "weight_memory": weight_memory}


AVGPOOL = _record([
    (0, "InputOperator", "FLOAT16", "CPU", "\\", "(1,3,16,16)", 0, 0, 0, 0.0, "InputOperator:x", None),
    (1, "ConvRelu", "FLOAT16", "NPU", "(1,3,16,16),(8,3,3,3),(8)", "(1,8,16,16)", 290, 2304, 2304, 2.0, "Conv:conv", None),
    (2, "AveragePool", "FLOAT16", "CPU", "(1,8,16,16)", "(1,8,16,16)", 0, 0, 0, 4.0, "AveragePool:avgpool", FALLBACK),
    (3, "OutputOperator", "FLOAT16", "CPU", "(1,8,16,16)", "\\", 0, 0, 0, 4.0, "OutputOperator:y", None),
], 13824, 3264)

CNN = _record([
    (0, "InputOperator", "FLOAT16", "CPU", "\\", "(1,3,32,32)", 0, 0, 0, 0.0, "InputOperator:images", None),
    (1, "ConvRelu", "FLOAT16", "NPU", "(1,3,32,32),(8,3,3,3),(8)", "(1,8,32,32)", 1004, 9216, 9216, 7.0, "Conv:conv1",
     None),
    (2, "ConvRelu", "FLOAT16", "NPU", "(1,8,32,32),(16,8,3,3),(16)", "(1,16,16,16)", 1140, 2304, 2304, 18.0,
     "Conv:conv2", None),
    (3, "MaxPool", "FLOAT16", "NPU", "(1,16,16,16)", "(1,16,8,8)", 0, 0, 0, 8.0, "MaxPool:pool", None),
    (4, "OutputOperator", "FLOAT16", "CPU", "(1,16,8,8)", "\\", 0, 0, 0, 2.0, "OutputOperator:features", None),
    (5, "ConvRelu", "FLOAT16", "NPU", "(1,16,8,8),(32,16,3,3),(32)", "(1,32,8,8)", 655, 1152, 1152, 11.0, "Conv:conv3",
     None),
    (6, "Conv", "FLOAT16", "NPU", "(1,32,8,8),(1,32,7,7),(32)", "(1,32,2,2)", 322, 784, 784, 7.0, "Conv:gap_2conv0",
     None),
    (7, "Conv", "FLOAT16", "NPU", "(1,32,2,2),(1,32,2,2),(32)", "(1,32,1,1)", 30, 64, 64, 0.0, "Conv:gap_2conv1", None),
    (8, "Conv", "FLOAT16", "NPU", "(1,32,1,1),(10,32,1,1),(10)", "(1,10,1,1)", 34, 32, 34, 0.0, "Conv:fc#2", None),
    (9, "Reshape", "FLOAT16", "CPU", "(1,10,1,1),(2)", "(1,10)", 0, 0, 0, 0.0, "Reshape:logits_mm_tp_rs", None),
    (10, "OutputOperator", "FLOAT16", "CPU", "(1,10)", "\\", 0, 0, 0, 0.0, "OutputOperator:logits", None),
], 47104, 19392)


def test_the_avgpool_build_has_one_npu_and_one_cpu_layer_with_its_onnx_op_tensor_and_reason(tmp_path):
    rknn = tmp_path / "avgpool.rknn"
    rknn.write_bytes(b"\0" * 19881)
    profile = build_profile(AVGPOOL, read_model_info(MODELS / "avgpool.onnx"), rknn, 0.75)
    assert profile == Profile(npu_ops=1, cpu_ops=1, cycles=2304, internal_memory=13824, weight_memory=3264,
                              rknn_bytes=19881, build_seconds=0.75,
                              cpu_layers=[CpuLayer("AveragePool", "avgpool", "AveragePool", "y", FALLBACK)])


def test_a_cpu_layer_the_toolkit_made_has_no_onnx_op_type_nor_tensor_and_cycles_are_summed_over_all_layers():
    profile = build_profile(CNN, read_model_info(MODELS / "cnn.onnx"), None, None)
    assert (profile.npu_ops, profile.cpu_ops) == (7, 1)
    assert profile.cpu_layers == [CpuLayer("Reshape", "logits_mm_tp_rs", None, None, None)]
    assert profile.cycles == 9216 + 2304 + 1152 + 784 + 64 + 34
    assert (profile.internal_memory, profile.weight_memory, profile.rknn_bytes, profile.build_seconds) == (
        47104, 19392, None, None)


def test_a_node_of_the_layers_name_without_outputs_gives_no_tensor():
    model = ModelInfo(MODELS / "avgpool.onnx", "0" * 64, [], [], ops=(OpInfo("avgpool", "AveragePool", ()),))
    [layer] = build_profile(AVGPOOL, model, None, None).cpu_layers
    assert (layer.onnx_op_type, layer.tensor) == (None, None)


def test_without_cycles_the_profile_has_none_and_without_a_table_there_is_no_profile(tmp_path):
    record = json.loads(json.dumps(AVGPOOL))
    for layer in record["layers"]:
        layer["cycles_ddr"] = layer["cycles_npu"] = layer["cycles_total"] = None
    model = read_model_info(MODELS / "avgpool.onnx")
    profile = build_profile(record, model, tmp_path / "not-written.rknn", 1.0)
    assert (profile.cycles, profile.rknn_bytes, profile.cpu_ops) == (None, None, 1)
    assert build_profile(None, model, None, None) is None and build_profile({}, model, None, None) is None


def test_the_baseline_metrics_leave_out_the_build_time_and_what_is_unknown():
    profile = Profile(1, 2, 2304, 13824, 3264, 19881, 0.75, [])
    assert profile.metrics() == {"cpu_ops": 2, "cycles": 2304, "memory.internal": 13824, "memory.weight": 3264,
                                 "memory.rknn_file": 19881}
    assert Profile(1, 0, None, None, None, None, 0.75, []).metrics() == {"cpu_ops": 0}


def test_a_profile_survives_a_json_round_trip_with_its_cpu_layers():
    profile = build_profile(AVGPOOL, read_model_info(MODELS / "avgpool.onnx"), None, 0.75)
    values = json.loads(json.dumps(profile.to_dict()))
    assert values["cpu_layers"] == [{"op_type": "AveragePool", "node": "avgpool", "onnx_op_type": "AveragePool",
                                     "tensor": "y", "reason": FALLBACK}]
    assert values["npu_ops"] == 1 and values["build_seconds"] == 0.75
    again = Profile.from_dict(values)
    assert again == profile and isinstance(again.cpu_layers[0], CpuLayer)
