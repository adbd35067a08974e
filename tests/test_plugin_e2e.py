"""pytest-rknn end to end: real pytest, real onnxruntime, the real rknn-toolkit2 simulator."""

import json
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np

from conftest import CHILD_WRAPPER, EXAMPLES, FIXTURES, MODELS, alive, job_dirs, write_spec

from pytest_rknn.toolkit.envs import Provisioner, ToolkitRequest

YOLO = FIXTURES / "yolo"
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
    # --rknn-keep-outputs: the arrays of passed items are read below (see test_job_folders.py)
    result, basetemp = run_pytest(str(EXAMPLES), "--rknn-toolkit=2.3.2,2.5.0", "-p", "rknn_probe",
                                  "--rknn-keep-outputs")
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


def test_overrides_of_inputs_and_normalisation_reach_their_own_versions_inputs_and_reference(run_pytest, pytester):
    """2.3.2 gets other random inputs and a normalisation of 0..1 data; 2.5.0 the spec's own. Each version's
    job holds its own arrays, and each is judged against a reference fed like its own NPU, so both agree."""
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", """model: cnn.onnx
inputs: {images: {random: [0, 255], seed: 1, count: 2}}
convert: {mean_values: [[0, 0, 0]], std_values: [[255, 255, 255]]}
checks: {cosine: 0.999}
versions:
  "2.3.2": {inputs: {images: {random: [0, 1], seed: 2}}, convert: {std_values: [[1, 1, 1]]}}
""")
    result, basetemp = run_pytest("--rknn-toolkit=2.3.2,2.5.0", "--rknn-keep-outputs")
    result.assert_outcomes(passed=2)
    jobs = job_dirs(basetemp, "cnn")
    with np.load(jobs["2.3.2"] / "inputs.npz") as old, np.load(jobs["2.5.0"] / "inputs.npz") as new:
        assert old["s0_i0"].max() <= 1 < new["s0_i0"].max()
    assert json.loads((jobs["2.3.2"] / "job.json").read_text())["config"]["std_values"] == [[1, 1, 1]]
    assert json.loads((jobs["2.5.0"] / "job.json").read_text())["config"]["std_values"] == [[255, 255, 255]]


def test_k_selects_one_version(run_pytest):
    result, _ = run_pytest(str(EXAMPLES), "--rknn-toolkit=2.3.2,2.5.0", "--collect-only", "-q", "-k", "2.3.2 and cnn")
    names = re.findall(r"::(\S+)$", result.stdout.str(), re.M)
    assert names == ["cnn[2.3.2-sim]", "cnn_int8[2.3.2-sim]"]


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def log_tail_section(out, item):
    """The text of the `Captured rknn log tail` section in the failure report of one item."""
    block = re.search(rf"^_+ {re.escape(item)} _+\n(.*?)(?=^_{{5,}} |^=+ )", out, re.S | re.M)
    assert block, f"no failure report for {item}"
    section = re.search(r"^-+ Captured rknn log tail call -+\n(.*)", block.group(1), re.S | re.M)
    assert section, f"{item}: no 'Captured rknn log tail' section"
    return section.group(1).rstrip("\n")


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
    result, basetemp = run_pytest(str(folder), "--rknn-toolkit-verbose")  # verbose: long logs, cut to their tail
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
    # --rknn-toolkit-verbose: the toolkit's verbose build output is in the job's log.txt (and not without it:
    # see the timeout test).
    verbose = (job_dirs(basetemp, "good")["2.5.0"] / "log.txt").read_text()
    assert "D RKNN:" in verbose and "Network Layer Information Table" in verbose
    # A BUILD or CRASH failure carries the tail of its job's log.txt, with the toolkit's error line in it.
    for spec, error_line in (("build_fail", r"E build: The input 0 of NonZero\('nonzero'\) need to be constant!"),
                             ("conv_abort", r"E RKNN: \[[\d:.]+\] Failed to config layer: 'Conv:y', Fatal Error")):
        tail = log_tail_section(out, f"{spec}[2.5.0-sim]").splitlines()
        log = [line for line in ANSI.sub("", (job_dirs(basetemp, spec)["2.5.0"] / "log.txt").read_text()).splitlines()
               if line.strip()]
        assert len(log) > len(tail) >= 10 and log[0] not in tail, spec  # the tail of a longer log
        assert tail[-5:] == log[-5:], spec  # it ends where the log ends, lines as they are
        assert any(re.search(error_line, line) for line in tail), spec
    # A user's mistake is a message, not an internal traceback (the toolkit's own log tail may hold one).
    without_log_tails = re.sub(r"-+ Captured rknn log tail call -+\n.*?(?=^_{5,}|^=+ rknn summary)", "", out,
                               flags=re.S | re.M)
    assert "Traceback" not in without_log_tails and "pytest_rknn/" not in out


def test_a_hung_worker_is_a_timeout_and_its_process_group_is_killed(run_pytest, pytester, toolkit_cache, tmp_path):
    """One run for the per-job options: --rknn-timeout against a spec's `timeout:`, the process group kill,
    an existing environment named by path next to a version that cannot be provisioned, a quiet toolkit log
    without --rknn-toolkit-verbose, and report paths from an ini file in another folder than the current one."""
    import json
    import shlex

    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    # A YOLO build and 40 inferences: about 5 s even on a worker that imported the toolkit for an earlier job
    # (--rknn-jobs=1: short_timeout runs on the worker that long_timeout left).
    shutil.copy(YOLO / "yolov5_single.onnx", pytester.path / "yolo.onnx")
    slow = "model: yolo.onnx\ninputs: {images: {random: [0, 255], count: 40}}\n"
    write_spec(pytester.path, "default_timeout", slow)
    write_spec(pytester.path, "short_timeout", f"{slow}timeout: 1\n")
    write_spec(pytester.path, "long_timeout", "model: cnn.onnx\ntimeout: 600\n")
    python = Provisioner(toolkit_cache).python_for(ToolkitRequest("2.5.0"))
    wrapper = pytester.path / "toolkit-python"
    wrapper.write_text(CHILD_WRAPPER.format(python=shlex.quote(python)))
    wrapper.chmod(0o755)
    (pytester.path / "sub").mkdir()
    (pytester.path / "sub" / "pytest.ini").write_text("[pytest]\nrknn_json = out/r.json\n")
    children = {}
    try:
        result, basetemp = run_pytest(f"--rknn-toolkit=2.5.0={wrapper},9.9.9", f"--rknn-toolkit-cache={tmp_path}",
                                      "--rknn-timeout=2", "-c", "sub/pytest.ini", "--rknn-jobs=1",
                                      "--rknn-no-cache",  # every job on a real worker: its pid, its group
                                      "--rknn-html=out/x.html", str(pytester.path))
        jobs = {spec: job_dirs(basetemp, spec)["2.5.0"]
                for spec in ("default_timeout", "short_timeout", "long_timeout")}
        # The wrapper starts its child when a worker starts: in the folder of that worker's first job.
        children = {spec: int((job / "child.pid").read_text()) for spec, job in jobs.items()
                    if (job / "child.pid").exists()}
        assert "default_timeout" in children  # the session's first job: always a fresh worker
        result.assert_outcomes(passed=1, failed=5)
        assert outcomes(result) == {"default_timeout[2.5.0-sim]": "TIMEOUT", "short_timeout[2.5.0-sim]": "TIMEOUT",
                                    "default_timeout[9.9.9-sim]": "ENV", "short_timeout[9.9.9-sim]": "ENV",
                                    "long_timeout[9.9.9-sim]": "ENV"}
        # No `timeout:` takes --rknn-timeout; a spec's `timeout:` wins, shorter (1 s) or longer (600 s, passed).
        result.stdout.re_match_lines([
            r"\[TIMEOUT\] default_timeout\[2\.5\.0-sim\]: rknn-toolkit2 2\.5\.0: no result after 2 s, during \w+; "
            r"worker process group killed",
            r"\[TIMEOUT\] short_timeout\[2\.5\.0-sim\]: rknn-toolkit2 2\.5\.0: no result after 1 s, during \w+; "
            r"worker process group killed"], consecutive=False)
        result.stdout.fnmatch_lines(["*[[]ENV[]] long_timeout[[]9.9.9-sim[]]: cannot provision rknn-toolkit2 9.9.9: *"])
        # The whole group is killed: the worker and the child it started, after a timeout and, for a worker
        # kept for the next job, when the job ended (the worker itself at the end of the session).
        for spec, job in jobs.items():
            assert not alive(int((job / "worker.pid").read_text())), spec
        for spec, child in children.items():
            assert not alive(child), f"{spec}: the worker's child {child} outlived the job"
        # Without --rknn-toolkit-verbose the toolkit logs no verbose build output (with it: see the failure test).
        quiet = (jobs["long_timeout"] / "log.txt").read_text()
        assert "rknn-toolkit2 version: 2.5.0" in quiet and "I rknn building" in quiet
        assert "D RKNN:" not in quiet and "Network Layer Information Table" not in quiet
        # Paths: ini values are relative to the ini file's folder, command-line values to the current directory.
        here, sub = pytester.path, pytester.path / "sub"
        assert not (here / "out" / "r.json").exists() and not (sub / "out" / "x.html").exists()
        items = json.loads((sub / "out" / "r.json").read_text())["items"]
        assert {(i["spec"], i["version"]): i["class"] for i in items} == {
            ("default_timeout", "2.5.0"): "TIMEOUT", ("short_timeout", "2.5.0"): "TIMEOUT",
            ("long_timeout", "2.5.0"): None, ("default_timeout", "9.9.9"): "ENV", ("short_timeout", "9.9.9"): "ENV",
            ("long_timeout", "9.9.9"): "ENV"}
        assert "long_timeout" in (here / "out" / "x.html").read_text()
    finally:
        for pid in children.values():  # never leave a sleep behind, even when the kill is broken
            try:
                if alive(pid) and b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


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


def test_bad_option_values_are_usage_errors(run_pytest):
    result, _ = run_pytest("--rknn-toolkit=2.5")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--rknn-toolkit: '2.5' is not a version like 2.5.0*"])
    result, _ = run_pytest("--rknn-timeout=-3")
    assert result.ret == 4
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
    write_spec(pytester.path, "b", "model: cnn.onnx\ninputs: {images: {random: [0, 1], seed: 5}}\n"
                                   "checks: {cosine: {min: 1.0}}\n")
    junit = tmp_path / "junit.xml"
    result, _ = run_pytest("-n", "2", f"--junitxml={junit}")
    result.assert_outcomes(passed=1, failed=1)
    assert outcomes(result) == {"b[2.5.0-sim]": "ACCURACY"}
    out = result.stdout.str()
    assert re.search(r"^a\s+2\.5\.0\s+sim\s+logits 0\.9", out, re.M) and re.search(r"^b\s+2\.5\.0\s+sim", out, re.M)
    cases = {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
             for case in ET.parse(junit).getroot().iter("testcase")}
    props, failed = cases["a[2.5.0-sim]"], cases["b[2.5.0-sim]"]
    assert props["rknn.version"] == "2.5.0" and props["rknn.outcome"] == "passed" and "rknn.class" not in props
    assert failed["rknn.outcome"] == "failed" and failed["rknn.class"] == "ACCURACY"
    assert float(failed["rknn.cosine.logits"]) < 1.0
    # Only flat rknn.* metrics: no summary row or record (a dict or list repr) leaks into the properties.
    for case in (props, failed):
        assert case and all(name.startswith("rknn.") for name in case), sorted(case)
        assert not [value for value in case.values() if value.lstrip().startswith(("{", "[", "("))]
    assert float(props["rknn.cosine.logits"]) > 0.999 and float(props["rknn.max_abs.features"]) < 0.05
    assert len(props["rknn.rknn_sha256"]) == 64
    assert len(props["rknn.model_sha256"]) == 64 and len(props["rknn.config_hash"]) == 16
    assert props["rknn.host.onnxruntime"] and props["rknn.host.python"].startswith("3.")
