"""pytest-rknn end to end: real pytest, real onnxruntime, the real rknn-toolkit2 simulator."""

import os
import re
import shutil

import numpy as np

from conftest import EXAMPLES, MODELS, job_dirs, write_spec

from pytest_rknn.toolkit.envs import Provisioner, ToolkitRequest

FAILURE_LINE = re.compile(r"^FAILED \S+::(\S+) - \[(\w+)\]", re.M)


def outcomes(result):
    """{item name: failure class} for failed items, from the short summary."""
    return dict(FAILURE_LINE.findall(result.stdout.str()))


PROBE = """
import sys

def pytest_sessionfinish(session):
    with open(f"{session.config.option.basetemp}/modules.txt", "w") as handle:
        handle.write("\\n".join(sorted(sys.modules)))
"""


def test_the_example_suite_runs_every_spec_in_every_version(run_pytest, pytester):
    pytester.makepyfile(rknn_probe=PROBE)
    result, basetemp = run_pytest(str(EXAMPLES), "--rknn-toolkit=2.3.2,2.5.0", "-p", "rknn_probe")
    result.assert_outcomes(passed=14)
    out = result.stdout.str()
    for spec in ("cnn", "cnn_int8", "two_input", "dynamic", "avgpool", "yolov5_heads_int8", "yolov5_single"):
        for version in ("2.3.2", "2.5.0"):
            assert re.search(rf"^{spec}\s+{re.escape(version)}\s+sim\s+.*passed", out, re.M), (spec, version)
            # Both versions really ran: each job's log names its own toolkit.
            log = (job_dirs(basetemp, spec)[version] / "log.txt").read_text()
            assert f"rknn-toolkit2 version: {version}" in log
    # The quantized build really is int8: the toolkit says it changed the input dtype.
    assert "int8" in (job_dirs(basetemp, "cnn_int8")["2.5.0"] / "log.txt").read_text()
    # The two-input model got each input in its own dtype.
    with np.load(job_dirs(basetemp, "two_input")["2.5.0"] / "inputs.npz") as inputs:
        assert (inputs["s0_i0"].dtype, inputs["s0_i1"].dtype) == (np.int64, np.float32)
    # Every preset shape of the dynamic model was run, each giving an output of its own shape.
    with np.load(job_dirs(basetemp, "dynamic")["2.5.0"] / "outputs.npz") as outputs:
        assert sorted(outputs[k].shape for k in outputs.files) == [(1, 4, 32, 32), (1, 4, 48, 48), (1, 4, 64, 64)]
    # The pytest process itself never imported rknn (see rknn_probe below).
    imported = (basetemp / "modules.txt").read_text().split()
    assert "pytest_rknn" in imported
    assert not [m for m in imported if m == "rknn" or m.startswith("rknn.")]


def test_k_selects_one_version(run_pytest):
    result, _ = run_pytest(str(EXAMPLES), "--rknn-toolkit=2.3.2,2.5.0", "--collect-only", "-q", "-k", "2.3.2 and cnn")
    names = re.findall(r"::(\S+)$", result.stdout.str(), re.M)
    assert names == ["cnn[2.3.2-sim]", "cnn_int8[2.3.2-sim]"]


def test_each_failure_gets_its_class_and_one_line_and_the_rest_still_run(run_pytest, pytester):
    for model in ("cnn", "build_fail", "conv_abort", "resize_segv"):
        shutil.copy(MODELS / f"{model}.onnx", pytester.path / f"{model}.onnx")
    folder = pytester.path
    write_spec(folder, "good", "model: cnn.onnx\n")
    write_spec(folder, "strict", "model: cnn.onnx\nchecks: {cosine: {min: 0.99999999}}\n")
    write_spec(folder, "schema_typo", "model: cnn.onnx\nchecks: {cosine: {mni: 0.9}}\n")
    write_spec(folder, "config_typo", "model: cnn.onnx\nconvert: {quantized_algorith: mmse}\n")
    write_spec(folder, "no_model", "model: models/missing.onnx\n")
    write_spec(folder, "bad_shape", "model: cnn.onnx\ninputs: {images: {random: [0, 1], shape: [1, 3, 30, 30]}}\n")
    write_spec(folder, "build_fail", "model: build_fail.onnx\n")
    write_spec(folder, "conv_abort", "model: conv_abort.onnx\n")
    write_spec(folder, "resize_segv", "model: resize_segv.onnx\n")
    result, _ = run_pytest(str(folder))
    out = result.stdout.str()
    result.assert_outcomes(passed=1, failed=8)
    assert outcomes(result) == {
        "strict[2.5.0-sim]": "ACCURACY", "schema_typo[2.5.0-sim]": "SPEC", "config_typo[2.5.0-sim]": "SPEC",
        "no_model[2.5.0-sim]": "SPEC", "bad_shape[2.5.0-sim]": "SPEC", "build_fail[2.5.0-sim]": "BUILD",
        "conv_abort[2.5.0-sim]": "CRASH", "resize_segv[2.5.0-sim]": "CRASH"}
    assert re.search(r"^\[ACCURACY\] strict\[2\.5\.0-sim\]: output '\w+' sample 0 \(random #0\): cosine 0\.\d{9} "
                     r"< min 0\.99999999", out, re.M)
    spec_file = lambda name: re.escape(str(folder / f"{name}.rknn.yaml"))
    assert re.search(rf"\[SPEC\] schema_typo\S+: {spec_file('schema_typo')}: checks\.cosine\.mni: unknown key "
                     r"\(did you mean `min`\?\)", out)
    assert re.search(rf"\[SPEC\] config_typo\S+: {spec_file('config_typo')}: convert\.quantized_algorith: "
                     r"rknn-toolkit2 2\.5\.0 has no rknn\.config parameter .*did you mean `quantized_algorithm`", out)
    assert re.search(rf"\[SPEC\] no_model\S+: {spec_file('no_model')}: model: model file not found", out)
    assert re.search(rf"\[SPEC\] bad_shape\S+: {spec_file('bad_shape')}: inputs\.images: gives shape "
                     r"\(1, 3, 30, 30\) .* is \(1, 3, 32, 32\)", out)
    assert "[BUILD] build_fail[2.5.0-sim]: rknn-toolkit2 2.5.0: build() raised ValueError: The input 0 of " \
           "NonZero('nonzero') need to be constant" in out
    assert "[CRASH] conv_abort[2.5.0-sim]: rknn-toolkit2 2.5.0: worker killed by SIGABRT during build: " \
           "E RKNN: Failed to config layer: 'Conv:y', Fatal Error" in out
    assert "[CRASH] resize_segv[2.5.0-sim]: rknn-toolkit2 2.5.0: worker killed by SIGSEGV during build " \
           "(the toolkit logged no error line; see the log tail)" in out
    # A user's mistake is a message, not an internal traceback (the toolkit's own log tail may hold one).
    without_log_tails = re.sub(r"-+ Captured rknn log tail call -+\n.*?(?=^_{5,}|^=+ rknn summary)", "", out,
                               flags=re.S | re.M)
    assert "Traceback" not in without_log_tails and "pytest_rknn/" not in out


def test_a_hung_worker_is_a_timeout_and_its_process_group_is_killed(run_pytest, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "slow", "model: cnn.onnx\ntimeout: 1\n")  # importing the toolkit alone takes longer
    result, basetemp = run_pytest()
    assert outcomes(result) == {"slow[2.5.0-sim]": "TIMEOUT"}
    result.stdout.re_match_lines([r"\[TIMEOUT\] slow\[2\.5\.0-sim\]: rknn-toolkit2 2\.5\.0: no result after 1 s, "
                                  r"during \w+; worker process group killed"])
    worker = int((job_dirs(basetemp, "slow")["2.5.0"] / "worker.pid").read_text())
    assert not _alive(worker)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_specs_run_from_python_with_a_marker_or_the_runner_fixture(run_pytest, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "model", "model: cnn.onnx\ninputs: {images: {random: [0, 255], count: 2}}\n"
                                       "convert: {mean_values: [0, 0, 0], std_values: [255, 255, 255]}\n")
    pytester.makepyfile(test_api="""
        import pytest

        @pytest.mark.rknn_spec("model.rknn.yaml")
        def test_marker(rknn_result):
            assert rknn_result.passed, rknn_result.message
            assert rknn_result.version == "2.5.0" and rknn_result.toolkit_version == "2.5.0"
            assert rknn_result["logits"].worst_cosine > 0.999
            assert len(rknn_result["features"].cosines) == 2
            assert rknn_result.rknn_path.is_file() and len(rknn_result.rknn_sha256) == 64

        def test_runner(rknn):
            result = rknn.run({"model": "cnn.onnx", "checks": {"cosine": 1.0}}, version="2.5.0")
            assert result.failure_class == "ACCURACY" and "< min 1.0" in result.message
    """)
    result, _ = run_pytest("test_api.py", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_api.py::test_marker?2.5.0-sim? PASSED*"])


def test_a_version_that_cannot_be_provisioned_fails_its_items_only(run_pytest, pytester, toolkit_cache, tmp_path):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    existing = Provisioner(toolkit_cache).python_for(ToolkitRequest("2.5.0"))
    # An existing environment named explicitly, and a version that does not exist, in a private cache.
    result, _ = run_pytest(f"--rknn-toolkit=2.5.0={existing},9.9.9", f"--rknn-toolkit-cache={tmp_path}")
    result.assert_outcomes(passed=1, failed=1)
    assert outcomes(result) == {"cnn[9.9.9-sim]": "ENV"}
    result.stdout.fnmatch_lines(["*[[]ENV[]] cnn[[]9.9.9-sim[]]: cannot provision rknn-toolkit2 9.9.9: *"])


def test_bad_option_values_are_usage_errors(run_pytest):
    result, _ = run_pytest("--rknn-toolkit=2.5")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--rknn-toolkit: '2.5' is not a version like 2.5.0*"])
    result, _ = run_pytest("--rknn-timeout=-3")
    result.stderr.fnmatch_lines(["*--rknn-timeout: -3 is not a positive number*"])


def test_every_option_has_an_ini_twin_and_the_command_line_wins(run_pytest, pytester):
    from pytest_rknn.options import OPTIONS

    help_text = run_pytest("--help")[0].stdout.str()
    for option in OPTIONS:
        assert option.flag in help_text and re.search(rf"^\s+{option.ini} \(", help_text, re.M), option.ini
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    pytester.makeini("[pytest]\nrknn_toolkit = 2.3.2, 2.5.0\n")
    names = lambda result: re.findall(r"::(\S+)$", result.stdout.str(), re.M)
    assert names(run_pytest("--collect-only", "-q")[0]) == ["cnn[2.3.2-sim]", "cnn[2.5.0-sim]"]
    assert names(run_pytest("--collect-only", "-q", "--rknn-toolkit=2.5.0")[0]) == ["cnn[2.5.0-sim]"]


def test_metrics_go_into_junit_xml_and_the_summary_survives_xdist(run_pytest, pytester, tmp_path):
    import xml.etree.ElementTree as ET

    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "a", "model: cnn.onnx\n")
    write_spec(pytester.path, "b", "model: cnn.onnx\ninputs: {images: {random: [0, 1], seed: 5}}\n")
    junit = tmp_path / "junit.xml"
    result, _ = run_pytest("-n", "2", f"--junitxml={junit}")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert re.search(r"^a\s+2\.5\.0\s+sim\s+logits 0\.9", out, re.M) and re.search(r"^b\s+2\.5\.0\s+sim", out, re.M)
    cases = {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
             for case in ET.parse(junit).getroot().iter("testcase")}
    props = cases["a[2.5.0-sim]"]
    assert props["rknn.version"] == "2.5.0" and props["rknn.outcome"] == "passed"
    assert float(props["rknn.cosine.logits"]) > 0.999 and float(props["rknn.max_abs.features"]) < 0.05
    assert len(props["rknn.rknn_sha256"]) == 64 and "rknn" not in props
    assert len(props["rknn.model_sha256"]) == 64 and len(props["rknn.config_hash"]) == 16
    assert props["rknn.host.onnxruntime"] and props["rknn.host.python"].startswith("3.")
