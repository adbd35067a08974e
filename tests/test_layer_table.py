"""The layer table of a verbose build, parsed from real toolkit logs (2.3.2 and 2.5.0): where each
layer runs, the toolkit's reason for a CPU layer, the estimated cycles and the memory totals."""

from conftest import EXAMPLES, job_dirs

from pytest_rknn.diagnosis.layers import parse_layer_table
from pytest_rknn.logs import read_log


def test_a_verbose_build_names_the_cpu_layer_and_the_toolkits_reason(run_pytest):
    result, basetemp = run_pytest(str(EXAMPLES / "avgpool.rknn.yaml"), "--rknn-toolkit=2.3.2,2.5.0",
                                  "--rknn-toolkit-verbose", "--rknn-keep-outputs")
    result.assert_outcomes(passed=2)
    for version, folder in job_dirs(basetemp, "avgpool").items():
        table = parse_layer_table(read_log(folder))
        assert table is not None, version
        [cpu] = table.cpu_layers
        assert (cpu.op_type, cpu.output_tensor, cpu.target) == ("AveragePool", "avgpool", "CPU"), version
        assert "count_include_pad=0, fallback to cpu" in cpu.reason, version
        assert [layer.op_type for layer in table.npu_layers] == ["ConvRelu"], version
        [conv] = table.npu_layers
        assert conv.output_tensor == "conv" and conv.cycles_total > 0 and conv.output_shape == "(1,8,16,16)", version
        assert [layer.op_type for layer in table.layers if not layer.is_operator] == ["InputOperator",
                                                                                     "OutputOperator"], version
        assert table.internal_memory > 0 and table.weight_memory > 0, version


def test_a_quiet_build_has_no_table(run_pytest):
    result, basetemp = run_pytest(str(EXAMPLES / "avgpool.rknn.yaml"), "--rknn-keep-outputs")
    result.assert_outcomes(passed=1)
    assert parse_layer_table(read_log(job_dirs(basetemp, "avgpool")["2.5.0"])) is None
