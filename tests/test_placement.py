"""Where a build puts its layers and what it costs, end to end in the real 2.3.2 and 2.5.0 simulators:
the AveragePool example (count_include_pad=0) that the toolkit quietly runs on the CPU, the
placement check and its ready-to-paste op_target line, the profile of every example, and the upgrade
gate on a profile change."""

import json
import re

import yaml
from conftest import EXAMPLES, MODELS, write_spec

from pytest_rknn.checks import placement_failures
from pytest_rknn.diagnosis.profile import CpuLayer, Profile
from pytest_rknn.spec import spec_from_dict

VERSIONS = "--rknn-toolkit=2.3.2,2.5.0"
AVGPOOL = f"""
model: {MODELS}/avgpool.onnx
inputs:
  x: {{random: [0, 1], count: 2}}
checks:
  cosine: {{min: 0.999}}
"""


def _items(report):
    return json.loads(report.read_text())["items"]


def test_the_avgpool_example_is_reported_with_its_cpu_layer_and_the_toolkits_reason(run_pytest, tmp_path):
    report, page = tmp_path / "report.json", tmp_path / "report.html"
    result, _ = run_pytest(str(EXAMPLES / "avgpool.rknn.yaml"), VERSIONS, f"--rknn-json={report}",
                           f"--rknn-html={page}")
    result.assert_outcomes(passed=2)  # no placement check: reported, not judged
    for item in _items(report):
        [layer] = item["profile"]["cpu_layers"]
        assert (layer["op_type"], layer["node"], layer["tensor"]) == ("AveragePool", "avgpool", "y"), item["version"]
        assert "count_include_pad=0, fallback to cpu" in layer["reason"]
        assert item["metrics"]["cpu_ops"] == 1 and item["profile"]["npu_ops"] == 1
    rows = [line for line in result.outlines if line.startswith("avgpool ")]
    assert len(rows) == 2 and all("CPU 1 (AveragePool)" in row for row in rows), rows
    html = page.read_text()
    where = html[html.index("Where it runs"):]
    assert where.count("1 layer on the CPU") == 2 and "count_include_pad=0, fallback to cpu" in where
    assert "op_target: {&#x27;y&#x27;: &#x27;npu&#x27;}" in where


def test_the_placement_check_fails_with_an_op_target_line_that_makes_it_pass(run_pytest, tmp_path):
    spec = write_spec(tmp_path, "avg", AVGPOOL + "  placement: {cpu_ops: 0}\n")
    report = tmp_path / "report.json"
    result, _ = run_pytest(str(spec), VERSIONS, f"--rknn-json={report}")
    result.assert_outcomes(failed=2)
    for item in _items(report):
        assert item["class"] == "PLACEMENT", item["message"]
        assert "AveragePool 'avgpool'" in item["message"] and "fallback to cpu" in item["message"]
    line = re.search(r"add under convert: (op_target: \{.*\})", _items(report)[0]["message"]).group(1)
    assert yaml.safe_load(line) == {"op_target": {"y": "npu"}}  # valid YAML, pasted as it is

    spec.write_text(AVGPOOL + "  placement: {cpu_ops: 0}\nconvert:\n  " + line + "\n")
    result, _ = run_pytest(str(spec), VERSIONS, f"--rknn-json={report}")
    result.assert_outcomes(passed=2)  # the toolkit puts it on the NPU, and the cosine holds
    for item in _items(report):
        assert item["profile"]["cpu_ops"] == 0 and item["profile"]["npu_ops"] == 2, item["version"]


def test_allow_cpu_lets_a_listed_op_type_stay_on_the_cpu(run_pytest, tmp_path):
    spec = write_spec(tmp_path, "avg", AVGPOOL + "  placement: {allow_cpu: [AveragePool]}\n")
    result, _ = run_pytest(str(spec))
    result.assert_outcomes(passed=1)


def test_the_message_says_when_the_toolkit_refuses_a_layer_the_spec_asks_for_on_the_npu(workdir):
    spec = spec_from_dict({"model": "avgpool.onnx", "convert": {"op_target": {"y": "npu"}},
                           "checks": {"placement": 0}}, base_dir=workdir)
    profile = Profile(1, 1, 2304, 13824, 3264, 19881, 0.05,
                      [CpuLayer("AveragePool", "avgpool", "AveragePool", "y", "fallback to cpu")])
    [line] = placement_failures(spec, profile, "rknn-toolkit2 2.5.0")
    assert "already asks for 'y' on the NPU" in line and "toolkit refuses" in line and "allow_cpu" in line
    assert placement_failures(spec, Profile(2, 0, 2304, 13824, 3264, 19881, 0.05, []), "x") == []


def _cpu_layers(n):
    return [CpuLayer("AveragePool", f"avgpool{i}", "AveragePool", f"y{i}", "fallback to cpu") for i in range(n)]


def test_a_budget_of_one_cpu_layer_passes_one_and_fails_two(workdir):
    spec = spec_from_dict({"model": "avgpool.onnx", "checks": {"placement": {"cpu_ops": 1}}}, base_dir=workdir)
    profile = lambda n: Profile(2, n, 2304, 13824, 3264, 19881, 0.05, _cpu_layers(n))
    assert placement_failures(spec, profile(0), "x") == []
    assert placement_failures(spec, profile(1), "x") == []
    [line] = placement_failures(spec, profile(2), "rknn-toolkit2 2.5.0")
    assert line.startswith("2 layers on the CPU where checks.placement allows 1: AveragePool 'avgpool0'")
    assert "AveragePool 'avgpool1'" in line and "op_target: {'y0': 'npu', 'y1': 'npu'}" in line


def test_allowed_op_types_are_not_counted_against_the_budget_and_others_are(workdir):
    spec = spec_from_dict({"model": "avgpool.onnx", "checks": {"placement": {"cpu_ops": 1, "allow_cpu": ["Resize"]}}},
                          base_dir=workdir)
    resize = CpuLayer("Resize", "up", "Resize", "u", None)
    fused = CpuLayer("ConvRelu", "conv", "Conv", "c", None)  # allowed by its ONNX op type as well
    two = lambda *extra: Profile(2, 1 + len(extra), None, None, None, None, None, _cpu_layers(1) + list(extra))
    assert placement_failures(spec, two(resize), "x") == []  # the Resize is not counted: 1 of 1
    [line] = placement_failures(spec, two(fused), "x")
    assert line.startswith("2 layers on the CPU where checks.placement allows 1 (besides Resize): ")
    assert "ConvRelu 'conv', the toolkit gave no reason" in line
    allow_conv = spec_from_dict({"model": "avgpool.onnx", "checks": {"placement": {"cpu_ops": 1, "allow_cpu": ["Conv"]}}},
                                base_dir=workdir)
    assert placement_failures(allow_conv, two(fused), "x") == []


def test_every_example_has_its_profile_in_the_json_report_for_each_version(run_pytest, tmp_path):
    report = tmp_path / "report.json"
    result, _ = run_pytest(str(EXAMPLES), VERSIONS, f"--rknn-json={report}")
    items = _items(report)
    assert len(items) == 2 * len(list(EXAMPLES.glob("*.rknn.yaml"))), result.outlines[-5:]
    for item in items:
        profile, where = item["profile"], f"{item['spec']} {item['version']}"
        assert profile is not None, where
        assert profile["npu_ops"] + profile["cpu_ops"] > 0 and profile["cycles"] > 0, where
        assert profile["internal_memory"] > 0 and profile["weight_memory"] > 0 and profile["rknn_bytes"] > 0, where
        assert profile["build_seconds"] > 0, where
        assert {"cpu_ops", "cycles", "memory.internal", "memory.weight"} <= set(item["metrics"]), where


def test_the_upgrade_gate_fails_a_version_that_moved_a_layer_to_the_cpu(run_pytest, tmp_path):
    """The spec's `versions:` override sends the pool to the CPU in 2.5.0 only; 2.3.2 runs it on the NPU."""
    spec = write_spec(tmp_path, "moved", AVGPOOL + """convert:
  op_target: {y: npu}
versions:
  "2.5.0": {convert: {op_target: {y: cpu}}}
""")
    report = tmp_path / "report.json"
    result, _ = run_pytest(str(spec), VERSIONS, "--rknn-compare-to=2.3.2", f"--rknn-json={report}")
    result.assert_outcomes(passed=1, failed=1)
    [new] = [item for item in _items(report) if item["version"] == "2.5.0"]
    assert new["class"] == "PLACEMENT"
    assert "upgrade gate vs 2.3.2" in new["message"] and "cpu_ops 1 vs 0" in new["message"], new["message"]
    assert "gate.cpu_ops allows 0" in new["message"] and "AveragePool 'avgpool'" in new["message"]

    # Allowed: the same run passes. A CPU layer also makes the .rknn file a third larger (measured: 19881
    # against 26473 bytes), which gate.memory would catch on its own.
    spec.write_text(spec.read_text() + "gate: {cpu_ops: 1, memory: 0.5}\n")
    result, _ = run_pytest(str(spec), VERSIONS, "--rknn-compare-to=2.3.2")
    result.assert_outcomes(passed=2)


def test_gates_set_only_under_one_version_judge_that_version(run_pytest, tmp_path):
    """`gate:` and `baseline_gate:` given only under `versions: {"2.5.0": ...}` decide 2.5.0's comparisons:
    one spec allows there what the base spec forbids, the other forbids what the base spec allows."""
    # 2.3.2 and the base: the pool on the NPU; 2.5.0 moves it to the CPU (and its .rknn grows by a third, which
    # no gate here judges)
    moved = "convert: {op_target: {y: npu}}\n"
    to_cpu = "convert: {op_target: {y: cpu}}"
    specs = {
        "gate_allows": moved + f'gate: {{memory: null}}\nversions: {{"2.5.0": {{{to_cpu}, gate: {{cpu_ops: 1}}}}}}\n',
        "gate_forbids": moved + f'gate: {{cpu_ops: 3, memory: null}}\n'
                                f'versions: {{"2.5.0": {{{to_cpu}, gate: {{cpu_ops: 0}}}}}}\n',
        "baseline_allows": 'versions: {"2.5.0": {baseline_gate: {cpu_ops: 1}}}\n',
        "baseline_forbids": 'baseline_gate: {cpu_ops: 3}\nversions: {"2.5.0": {baseline_gate: {cpu_ops: 0}}}\n',
    }
    for name, text in specs.items():
        write_spec(tmp_path, name, AVGPOOL + text)
    baseline = tmp_path / "bl"
    result, _ = run_pytest(str(tmp_path), VERSIONS, f"--rknn-baseline={baseline}", "--rknn-baseline-update")
    result.assert_outcomes(passed=8)
    for name in ("baseline_allows", "baseline_forbids"):  # as if 2.5.0 had run the pool on the NPU before
        [path] = baseline.rglob(f"{name}.json")
        recorded = json.loads(path.read_text())
        assert recorded["entries"]["2.5.0-sim"]["metrics"]["cpu_ops"] == 1
        recorded["entries"]["2.5.0-sim"]["metrics"]["cpu_ops"] = 0
        path.write_text(json.dumps(recorded))

    report = tmp_path / "report.json"
    result, _ = run_pytest(str(tmp_path), VERSIONS, f"--rknn-baseline={baseline}", "--rknn-compare-to=2.3.2",
                           f"--rknn-json={report}")
    verdicts = {(i["spec"], i["version"]): (i["class"], i["message"]) for i in _items(report)}
    assert {key for key, (cls, _) in verdicts.items() if cls} == {("gate_forbids", "2.5.0"),
                                                                  ("baseline_forbids", "2.5.0")}, verdicts
    cls, message = verdicts["gate_forbids", "2.5.0"]
    assert cls == "PLACEMENT" and message.startswith("upgrade gate vs 2.3.2 (this run): cpu_ops 1 vs 0 ")
    assert "gate.cpu_ops allows 0" in message
    cls, message = verdicts["baseline_forbids", "2.5.0"]
    assert cls == "PLACEMENT" and "cpu_ops 1 vs 0 (worse by 1; baseline_gate.cpu_ops allows 0)" in message


AVERAGE_POOL = CpuLayer("AveragePool", "avgpool", "AveragePool", "y", "AveragePool count_include_pad=0, fallback to cpu")
RESHAPE = CpuLayer("Reshape", "logits_mm_tp_rs", None, None, None)  # a layer the toolkit made: not an ONNX node


def _placement(workdir, placement, op_target=None):
    convert = {"convert": {"op_target": op_target}} if op_target else {}
    return spec_from_dict({"model": "avgpool.onnx", "checks": {"placement": placement}, **convert}, base_dir=workdir)


def test_without_a_placement_check_or_a_profile_nothing_is_judged(workdir):
    profile = Profile(1, 2, None, None, None, None, None, [AVERAGE_POOL, RESHAPE])
    assert placement_failures(spec_from_dict({"model": "avgpool.onnx"}, base_dir=workdir), profile, "x") == []
    assert placement_failures(_placement(workdir, 0), None, "x") == []  # the build printed no layer table


def test_the_op_target_hint_names_every_layer_with_a_tensor_and_skips_those_without(workdir):
    profile = Profile(1, 2, None, None, None, None, None, [AVERAGE_POOL, RESHAPE])
    [line] = placement_failures(_placement(workdir, 0), profile, "x")
    assert line == ("2 layers on the CPU where checks.placement allows 0: AveragePool 'avgpool', toolkit: AveragePool "
                    "count_include_pad=0, fallback to cpu; Reshape 'logits_mm_tp_rs', the toolkit gave no reason; to "
                    "ask for the NPU, add under convert: op_target: {'y': 'npu'}")
    assert yaml.safe_load(line.rpartition("add under convert: ")[2]) == {"op_target": {"y": "npu"}}


def test_a_layer_with_no_onnx_tensor_gets_no_op_target_hint(workdir):
    [line] = placement_failures(_placement(workdir, 0), Profile(1, 1, None, None, None, None, None, [RESHAPE]), "x")
    assert line == ("1 layer on the CPU where checks.placement allows 0: Reshape 'logits_mm_tp_rs', the toolkit gave "
                    "no reason")


def test_layers_asked_for_on_the_npu_by_tensor_or_node_name_are_named_as_refused(workdir):
    judged = _placement(workdir, {"cpu_ops": 0, "allow_cpu": ["Resize", "Gather"]},
                        op_target={"y": "npu", "logits_mm_tp_rs": "NPU"})
    profile = Profile(1, 3, None, None, None, None, None,
                      [AVERAGE_POOL, RESHAPE, CpuLayer("Resize", "up", "Resize", "u", None)])
    assert placement_failures(judged, profile, "rknn-toolkit2 2.5.0") == [
        "2 layers on the CPU where checks.placement allows 0 (besides Resize, Gather): AveragePool 'avgpool', toolkit: "
        "AveragePool count_include_pad=0, fallback to cpu; Reshape 'logits_mm_tp_rs', the toolkit gave no reason; "
        "convert.op_target already asks for 'y', 'logits_mm_tp_rs' on the NPU and rknn-toolkit2 2.5.0 still placed "
        "it on the CPU, so the toolkit refuses it there (allow it with checks.placement.allow_cpu: [AveragePool], or "
        "change the model)"]
