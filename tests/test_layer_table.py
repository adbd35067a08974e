"""The layer table of a verbose build, parsed from real toolkit logs (2.3.2 and 2.5.0): where each
layer runs, the toolkit's reason for a CPU layer, the estimated cycles and the memory totals."""

import json

from conftest import EXAMPLES, job_dirs

from pytest_rknn.diagnosis.layers import LayerTable, parse_layer_table
from pytest_rknn.logs import read_log


def test_a_verbose_build_names_the_cpu_layer_and_the_toolkits_reason(run_pytest):
    result, basetemp = run_pytest(str(EXAMPLES / "avgpool.rknn.yaml"), "--rknn-toolkit=2.3.2,2.5.0",
                                  "--rknn-toolkit-verbose", "--rknn-keep-outputs", "--rknn-no-cache")
    result.assert_outcomes(passed=2)
    for version, folder in job_dirs(basetemp, "avgpool").items():
        assert (folder / "check0_base_optimize.onnx").is_file(), version  # asked for: the toolkit's debug output
        table = parse_layer_table(read_log(folder))
        assert table is not None, version
        [cpu] = table.cpu_layers
        assert (cpu.op_type, cpu.node_name, cpu.target) == ("AveragePool", "avgpool", "CPU"), version
        assert "count_include_pad=0, fallback to cpu" in cpu.reason, version
        assert [layer.op_type for layer in table.npu_layers] == ["ConvRelu"], version
        [conv] = table.npu_layers
        assert conv.node_name == "conv" and conv.cycles_total > 0 and conv.output_shape == "(1,8,16,16)", version
        assert [layer.op_type for layer in table.layers if not layer.is_operator] == ["InputOperator",
                                                                                     "OutputOperator"], version
        assert table.internal_memory > 0 and table.weight_memory > 0, version


def test_without_toolkit_verbose_the_table_is_kept_and_the_debug_lines_are_not(run_pytest):
    result, basetemp = run_pytest(str(EXAMPLES / "avgpool.rknn.yaml"), "--rknn-keep-outputs")
    result.assert_outcomes(passed=1)
    folder = job_dirs(basetemp, "avgpool")["2.5.0"]
    log = read_log(folder)
    assert parse_layer_table(log) is None and not [line for line in log if line.startswith("D ")]
    assert any("fallback to cpu" in line for line in log)  # the toolkit's warnings stay
    assert not list(folder.glob("check*.onnx"))  # nor the models a verbose build writes after its passes
    table = LayerTable.from_record(json.loads((folder / "result.json").read_text())["layers"])
    assert [(layer.op_type, layer.target) for layer in table.cpu_layers] == [("AveragePool", "CPU")]
    assert "fallback to cpu" in table.cpu_layers[0].reason
