"""Validate early: a bad option is a usage error at start-up, and whatever a spec says that can be
checked against the ONNX graph or the toolkit's known values is a SPEC error before any worker
starts (not BUILD after it, and not silently nothing)."""

import json
import shutil
import subprocess
import warnings

import pytest

from pytest_rknn.comparisons import Comparisons
from pytest_rknn.early_checks import check_before_build
from pytest_rknn.errors import ENV, SPEC, RknnWarning, SpecError
from pytest_rknn.onnx_model import read_model_info
from pytest_rknn.result import OutputMetrics, RunResult
from pytest_rknn.runner import RknnRunner
from pytest_rknn.spec import TARGETS, spec_from_dict
from pytest_rknn.toolkit.envs import Provisioner, ToolkitRequest

from conftest import MODELS, TOOLKIT_CACHE, write_spec


# ---------------------------------------------------------------- options, at pytest_configure


def usage_error(pytester, *args) -> str:
    """Run pytest in this process (nothing is collected or built) and return its one error line."""
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert len(errors) == 1, result.stderr.str()
    return errors[0]


@pytest.mark.parametrize("args, words", [
    (["--rknn-toolkit="], "--rknn-toolkit is empty: give a value (--rknn-toolkit=VERSIONS), or leave the option "
                          "out for the default (2.5.0)"),
    (["--rknn-json="], "--rknn-json is empty"),
    (["--rknn-toolkit=2.5.0="], "--rknn-toolkit: '2.5.0=' names no Python after '='"),
    (["--rknn-toolkit=2.5.0=/no/such/python"], "--rknn-toolkit=2.5.0=/no/such/python: no executable Python there"),
    (["--rknn-timeout=nan"], "--rknn-timeout: nan is not a positive number"),
    (["--rknn-board-connect-timeout=inf"], "--rknn-board-connect-timeout: inf is not a positive number"),
    (["--rknn-compare-to=2.3"], "--rknn-compare-to: '2.3' is not a toolkit version like 2.3.2"),
    (["--rknn-torch-index=/no/such/wheels"], "--rknn-torch-index: '/no/such/wheels' is neither a URL nor an existing "
                                             "folder"),
])
def test_a_bad_option_is_one_usage_error_line_naming_it(pytester, args, words):
    assert words in usage_error(pytester, *args)


def test_report_and_cache_paths_that_cannot_be_used_are_usage_errors_before_the_work(pytester):
    (pytester.path / "folder").mkdir()
    (pytester.path / "plain").write_text("")
    assert f"--rknn-json: {pytester.path / 'folder'} is a folder" in usage_error(pytester, "--rknn-json=folder")
    assert f"because {pytester.path / 'plain'} is a file" in usage_error(pytester, "--rknn-html=plain/r.html")
    assert f"--rknn-toolkit-cache: {pytester.path / 'plain'} is a file" in usage_error(
        pytester, "--rknn-toolkit-cache=plain")


@pytest.mark.parametrize("ini, words", [
    ("rknn_toolkit =", "ini option rknn_toolkit is empty: give a value (rknn_toolkit = VERSIONS)"),
    ("rknn_timeout = 5m", "ini option rknn_timeout: '5m' is not a number of seconds"),
    ("rknn_toolkit_verbose = maybe", "ini option rknn_toolkit_verbose: invalid truth value 'maybe' (write true or "
                                     "false)"),
    ("rknn_compare_to = latest", "ini option rknn_compare_to: 'latest' is not a toolkit version"),
])
def test_ini_twins_are_checked_the_same_way(pytester, ini, words):
    pytester.makeini(f"[pytest]\n{ini}\n")
    assert words in usage_error(pytester)


# ---------------------------------------------------------------- the upgrade gate must compare something


def _passing(version):
    result = RunResult(spec="cnn", version=version, backend="sim")
    result.outputs = [OutputMetrics(name="logits", ref_shape=[1, 10], samples=1, worst_cosine=0.9999, max_abs=0.01)]
    return result


def test_a_compare_to_version_that_cannot_run_fails_the_items_it_could_not_compare(workdir):
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir)
    unprovisionable = RunResult(spec="cnn", version="9.9.9", backend="sim", failure_class=ENV,
                                message="cannot provision rknn-toolkit2 9.9.9: see its log")
    result = _passing("2.5.0")
    Comparisons(None, "9.9.9", ["2.5.0"]).apply(spec, result, lambda version: unprovisionable)
    assert (result.failure_class, result.passed) == (ENV, False)
    assert result.message.startswith("upgrade gate vs 9.9.9: cannot compare, its result has no metrics ([ENV] "
                                     "cannot provision rknn-toolkit2 9.9.9: see its log), so the gate compared nothing")
    assert result.failures == [result.message] and result.comparisons[0]["against"] == "9.9.9"


def test_an_item_that_already_failed_keeps_its_class_and_gets_the_gate_line_too(workdir):
    spec = spec_from_dict({"model": "cnn.onnx", "checks": {"cosine": 0.99999}}, base_dir=workdir)
    result = _passing("2.5.0")
    result.add_failures(["output 'logits' sample 0: cosine 0.9999 < min 0.99999"])
    broken = RunResult(spec="cnn", version="2.3.2", backend="sim", failure_class="CRASH", message="SIGSEGV in build")
    Comparisons(None, "2.3.2", ["2.5.0"]).apply(spec, result, lambda version: broken)
    assert result.failure_class == "ACCURACY" and len(result.failures) == 2
    assert "upgrade gate vs 2.3.2: cannot compare" in result.failures[1] and "[CRASH] SIGSEGV" in result.failures[1]


def test_the_gate_fails_end_to_end_when_the_compare_to_version_cannot_be_provisioned(run_pytest, pytester, tmp_path):
    """The issue's case: only a warning and exit status 0, while the gate compared nothing."""
    python = Provisioner(TOOLKIT_CACHE).python_for(ToolkitRequest("2.5.0"))
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    report = tmp_path / "report.json"
    result, _ = run_pytest(f"--rknn-toolkit=2.5.0={python}", "--rknn-compare-to=9.9.9",
                           f"--rknn-toolkit-cache={tmp_path / 'cache'}", f"--rknn-json={report}")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*[[]ENV[]] cnn[[]2.5.0-sim[]]: upgrade gate vs 9.9.9: cannot compare*"
                                 "cannot provision rknn-toolkit2 9.9.9*"])
    item, = json.loads(report.read_text())["items"]
    assert (item["outcome"], item["class"]) == ("failed", ENV) and item["metrics"]  # measured, then not compared


# ---------------------------------------------------------------- the spec against the ONNX graph


def checked(workdir, spec: dict, versions=("2.5.0",), compare_to=None):
    """Load the spec and run the checks that come before any worker, for its first version."""
    spec = spec_from_dict(spec, base_dir=workdir).for_version(versions[0])
    check_before_build(spec, read_model_info(spec.model_path), versions, compare_to)
    return spec


def spec_error(workdir, spec: dict, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as info:
        checked(workdir, spec, **kwargs)
    assert info.value.failure_class == SPEC
    return info.value


@pytest.mark.parametrize("checks, field, words", [
    ({"cosine": {"outputs": {"logit": 0.9}}}, "checks.cosine.outputs.logit",
     "the model has no output 'logit', so this threshold would never apply (did you mean `logits`? its outputs are: "
     "logits, features)"),
    ({"max_abs": {"max": 1, "outputs": {"feature": 0.1}}}, "checks.max_abs.outputs.feature", "did you mean `features`?"),
    ({"vs_sim_cosine": {"outputs": {"logit": 0.9999}}}, "checks.vs_sim_cosine.outputs.logit", "no output 'logit'"),
])
def test_a_threshold_for_an_output_the_model_does_not_have_is_refused_before_the_build(workdir, checks, field, words):
    error = spec_error(workdir, {"model": "cnn.onnx", "checks": checks})
    assert error.field == field and words in error.message


@pytest.mark.parametrize("key, words", [
    ("conv", "'conv' is the name of an op, and op_target wants its output tensor (write `c: cpu`)"),
    ("x", "'x' is a model input, not the output of an op"),
    ("AvgPool", "the model has no op output tensor or op type 'AvgPool' (did you mean `AveragePool`?"),
])
def test_op_target_names_an_op_output_tensor_or_an_op_type_of_the_model(workdir, key, words):
    error = spec_error(workdir, {"model": "avgpool.onnx", "convert": {"op_target": {key: "cpu"}}})
    assert error.field == f"convert.op_target.{key}" and words in error.message
    checked(workdir, {"model": "avgpool.onnx", "convert": {"op_target": {"c": "cpu", "AveragePool": "npu"}}})


@pytest.mark.parametrize("model, convert, field, words", [
    ("cnn.onnx", {"mean_values": [[0, 0, 0, 0]], "std_values": [[1, 1, 1, 1]]}, "convert.mean_values[0]",
     "gives 4 values, but input 'images' (1, 3, 32, 32) has 3 channels (its dimension 1) (give one value per "
     "channel, e.g. [0, 0, 0])"),
    ("cnn.onnx", {"std_values": [[255]]}, "convert.std_values[0]", "gives 1 value, but input 'images'"),
    ("cnn.onnx", {"mean_values": [[0, 0, 0], [0, 0, 0]]}, "convert.mean_values",
     "gives 2 lists, but the model has 1 input (images); the toolkit would ignore the rest"),
    ("two_input.onnx", {"mean_values": [[0], [0]]}, "convert.mean_values[0]",
     "input 'keypoints' (1, 64, 2) has 64 channels (its dimension 1) (give one value per channel, e.g. [0, 0, 0, 0, "
     "...])"),
    ("two_input.onnx", {"std_values": [[2] * 64]}, "convert.std_values[0]",
     "input 'keypoints' is int64, and integer inputs are not normalised (neither by the NPU nor by the reference), so "
     "these values would do nothing (write 1 for every channel of it)"),
])
def test_mean_and_std_give_one_list_per_input_and_one_value_per_channel(workdir, model, convert, field, words):
    error = spec_error(workdir, {"model": model, "convert": convert})
    assert error.field == field and words in error.message
    checked(workdir, {"model": "two_input.onnx", "convert": {"mean_values": [[0] * 64, [0.5] * 64],
                                                             "std_values": [[1] * 64]}})  # neutral for the integer one


def test_a_mistake_in_a_version_override_is_named_under_versions(workdir):
    error = spec_error(workdir, {"model": "avgpool.onnx",
                                 "versions": {"2.5.0": {"convert": {"op_target": {"z": "cpu"}}}}})
    assert error.field == "versions.2.5.0.convert.op_target.z"


def test_overrides_for_an_unknown_version_are_refused_and_for_one_not_in_the_run_warned_about(workdir):
    error = spec_error(workdir, {"model": "cnn.onnx", "versions": {"2.3.3": {"checks": {"cosine": 0.9}}}})
    assert error.field == "versions.2.3.3" and "'2.3.3' is neither a rknn-toolkit2 version that pytest-rknn knows " \
                                               "(2.2.0, 2.3.0, 2.3.2, 2.5.0) nor one that this run tests (2.5.0)" \
                                               in error.message
    assert "did you mean `2.3.2`?" in error.message
    checked(workdir, {"model": "cnn.onnx", "versions": {"2.6.0": {}}}, versions=("2.6.0",))  # tested, so known
    with pytest.warns(RknnWarning, match=r"versions\.2\.3\.2: this run does not test rknn-toolkit2 2\.3\.2 "
                                         r"\(it tests 2\.5\.0\), so these overrides do nothing here"):
        checked(workdir, {"model": "cnn.onnx", "versions": {"2.3.2": {"checks": {"cosine": 0.9}}}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the gate's version uses its overrides: no warning
        checked(workdir, {"model": "cnn.onnx", "versions": {"2.3.2": {}}}, compare_to="2.3.2")


class _NoWorkers:
    def python_for(self, request):
        pytest.fail("a worker was about to start for a spec that is wrong")


def test_these_checks_run_before_any_worker_starts(workdir, tmp_path):
    runner = RknnRunner(_NoWorkers(), [ToolkitRequest("2.5.0")], work_root=tmp_path)
    result = runner.run(spec_from_dict({"model": "cnn.onnx", "convert": {"op_target": {"logit": "cpu"}}},
                                       base_dir=workdir), "2.5.0")
    assert result.failure_class == SPEC and "convert.op_target.logit" in result.message


def test_many_wrong_specs_fail_as_spec_end_to_end_and_no_toolkit_starts(run_pytest, pytester):
    for model in ("cnn.onnx", "avgpool.onnx", "two_input.onnx"):
        shutil.copy(MODELS / model, pytester.path / model)
    specs = {
        "target": "model: cnn.onnx\ntarget: rk3855\n",
        "override": "model: cnn.onnx\nversions:\n  2.5: {checks: {cosine: 0.9}}\n",
        "std": "model: cnn.onnx\nconvert: {std_values: [[255, 0, 255]]}\n",
        "channels": "model: cnn.onnx\nconvert: {mean_values: [[0, 0, 0, 0]], std_values: [[1, 1, 1, 1]]}\n",
        "op_target": "model: avgpool.onnx\nconvert: {op_target: {conv: cpu}}\n",
        "outputs": "model: cnn.onnx\nchecks: {cosine: {outputs: {logit: 0.9}}}\n",
        "int_data": "model: two_input.onnx\ninputs:\n  keypoints: {random: [0, 1], dtype: float32}\n"
                    "versions:\n  '2.3.2': {timeout: 10}\n",
    }
    for name, text in specs.items():
        write_spec(pytester.path, name, text)
    result, basetemp = run_pytest()
    result.assert_outcomes(failed=len(specs))
    lines = {name: next(line for line in result.stdout.lines if line.startswith(f"[SPEC] {name}[2.5.0-sim]:"))
             for name in specs}
    assert "target: 'rk3855' is not a platform" in lines["target"]
    assert "versions.2.5: 2.5 is not a toolkit version" in lines["override"]
    assert "convert.std_values[0]: channel 1 is 0" in lines["std"]
    assert "convert.mean_values[0]: gives 4 values" in lines["channels"]
    assert "convert.op_target.conv" in lines["op_target"]
    assert "checks.cosine.outputs.logit" in lines["outputs"]
    assert "inputs.keypoints: the model input 'keypoints' is int64" in lines["int_data"]
    assert not list(basetemp.glob("rknn/*/*/job.json"))  # no worker job was ever written
    result.stdout.fnmatch_lines(["*RknnWarning: *int_data.rknn.yaml: versions.2.3.2: this run does not test "
                                 "rknn-toolkit2 2.3.2 (it tests 2.5.0), so these overrides do nothing here"])
    assert "Traceback" not in result.stdout.str()


# ---------------------------------------------------------------- the toolkit's own list of targets


def test_the_known_targets_are_what_the_installed_toolkit_accepts():
    python = Provisioner(TOOLKIT_CACHE).python_for(ToolkitRequest("2.5.0"))
    code = ("import warnings; warnings.filterwarnings('ignore')\n"
            "import sys; from rknn.api import RKNN\n"
            "def accepts(t):\n"
            "    try: return RKNN().config(target_platform=t) == 0\n"
            "    except Exception: return False\n"
            "print('ACCEPTED', [t for t in sys.argv[1:] if accepts(t)])\n")
    refused = ["rk1808", "rv1126", "rk3399pro", "rk9999"]
    done = subprocess.run([python, "-c", code, *TARGETS, *refused], capture_output=True, text=True, timeout=300)
    accepted = next(line for line in done.stdout.splitlines() if line.startswith("ACCEPTED"))
    assert accepted == f"ACCEPTED {list(TARGETS)}", done.stdout[-2000:]
