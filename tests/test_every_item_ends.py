"""Every item ends with a result: whatever goes wrong inside an item (a bug of ours, a hook of the
user's, a fixture, a corrupt baseline, bad labels) is one classified line on the terminal and an
entry in the JSON and HTML reports, and the end of the session writes every output it can."""

import json
import re
import shutil
from types import SimpleNamespace

from conftest import FIXTURES, MODELS, write_spec

from pytest_rknn.items import RECORD_ATTRIBUTE, record_result
from pytest_rknn.report_html import render
from pytest_rknn.runner import RknnRunner
from pytest_rknn.toolkit.envs import ToolkitRequest
from pytest_rknn.result import INTERNAL, RunResult, describe_exception, format_cosine

FAILURE_LINE = re.compile(r"^FAILED (\S+) - \[(\w+)\]", re.M)
YOLO = FIXTURES / "yolo"

CONFTEST = """
import os

def pytest_sessionstart(session):
    os.makedirs(session.config.getoption("rknn_html"))  # a folder now stands where the HTML report goes

def pytest_rknn_artifact_built(spec):
    if spec.name == "hook":
        raise RuntimeError("the archive is full")
"""

TESTS = """
import pytest

@pytest.fixture
def dataset_server():
    raise ConnectionError("no dataset server")

@pytest.mark.rknn_spec("missing.rknn.yaml")
def test_missing_spec(rknn_result):
    assert rknn_result.passed, rknn_result.message

@pytest.mark.rknn_spec("a/cnn.rknn.yaml")
def test_fixture_error(dataset_server, rknn_result):
    pass

@pytest.mark.skip(reason="not today")
@pytest.mark.rknn_spec("a/cnn.rknn.yaml")
def test_skipped(rknn_result):
    pass
"""


def without_sections(out, name):
    """The terminal output without the `Captured NAME` report sections."""
    return re.sub(rf"^-+ Captured {name} \w+ -+\n.*?(?=^_{{5,}} |^=+ )", "", out, flags=re.S | re.M)


def test_whatever_goes_wrong_every_item_ends_with_one_line_in_the_summary_and_every_report(run_pytest, pytester):
    """One run for the kinds that end a simulator item early: a hook implementation that raises, a
    spec named in a marker that does not exist, a fixture that raises before rknn_result, a skip, a
    corrupt baseline file under --rknn-baseline-update, YOLO labels of a class the model lacks, two
    specs of the same name in two folders, and an HTML report that cannot be written at the end."""
    folder = pytester.path
    for sub in ("a", "b"):
        (folder / sub).mkdir()
        shutil.copy(MODELS / "cnn.onnx", folder / sub / "cnn.onnx")
        write_spec(folder / sub, "cnn", "model: cnn.onnx\n")  # the same name and config, two folders
    shutil.copy(MODELS / "cnn.onnx", folder / "cnn.onnx")
    write_spec(folder, "hook", "model: cnn.onnx\n")
    write_spec(folder, "corrupt", "model: cnn.onnx\n")
    (folder / "bl").mkdir()
    (folder / "bl" / "corrupt.json").write_text('<<<<<<< HEAD\n{"format": 1}\n')  # a merge conflict
    labels = folder / "labels"
    shutil.copytree(YOLO / "val" / "labels", labels)
    (labels / "classes.txt").unlink()
    (labels / "val_001.txt").write_text("1 0.5 0.5 0.2 0.2\n9 0.5 0.5 0.2 0.2\n")  # the model has 4 classes
    write_spec(folder, "labels", f"model: {YOLO}/yolov5_heads.onnx\n"
                                 f"inputs: {{images: {{images: '{YOLO}/val/images/*.jpg', letterbox: 160, limit: 3}}}}\n"
                                 f"checks: {{yolov5: {{labels: labels}}}}\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_api=TESTS)
    report = folder / "out" / "report.json"
    result, basetemp = run_pytest("--rknn-baseline=bl", "--rknn-baseline-update", f"--rknn-json={report}",
                                  "--rknn-html=out/report.html")
    out = result.stdout.str()
    result.assert_outcomes(passed=2, failed=4, errors=1, skipped=1)
    assert dict(FAILURE_LINE.findall(out)) == {
        "hook.rknn.yaml::hook[2.5.0-sim]": "INTERNAL", "corrupt.rknn.yaml::corrupt[2.5.0-sim]": "SPEC",
        "labels.rknn.yaml::labels[2.5.0-sim]": "SPEC"}
    # Each of them one line: the class, the item, what and where, the fix.
    assert re.search(r"^\[INTERNAL\] hook\[2\.5\.0-sim\]: pytest_rknn_artifact_built\(\) in \S+conftest\.py:8 raised "
                     r"RuntimeError: the archive is full \(code outside pytest-rknn, called by it; the traceback is "
                     r"in the 'rknn traceback' section\)$", out, re.M)
    assert ("[SPEC] corrupt[2.5.0-sim]: baseline bl/corrupt.json: not a pytest-rknn baseline (Expecting value: line 1 "
            "column 1 (char 0)); fix it, or delete it and re-record with --rknn-baseline-update") in out
    assert re.search(rf"^\[SPEC\] labels\[2\.5\.0-sim\]: {re.escape(str(folder / 'labels.rknn.yaml'))}: "
                     rf"checks\.yolov5\.labels: {re.escape(str(labels / 'val_001.txt'))}: line 2: class 9, but the "
                     r"model has 4 classes \(0\.\.3\)$", out, re.M)
    # The traceback of the hook is in its report section; no other traceback and no pytest-rknn frame.
    section = re.search(r"^-+ Captured rknn traceback call -+\n(.*?)(?=^_{5,} |^=+ )", out, re.S | re.M).group(1)
    assert "Traceback (most recent call last)" in section and 'conftest.py", line 8' in section
    rest = without_sections(out, "rknn traceback")
    assert "Traceback" not in rest and "pytest_rknn/" not in rest

    # Every collected item is in the JSON report, whatever happened to it; the summary has them too.
    document = json.loads(report.read_text())
    items = {i["nodeid"]: i for i in document["items"]}
    assert {node: (i["outcome"], i["class"]) for node, i in items.items()} == {
        "a/cnn.rknn.yaml::cnn[2.5.0-sim]": ("passed", None), "b/cnn.rknn.yaml::cnn[2.5.0-sim]": ("passed", None),
        "hook.rknn.yaml::hook[2.5.0-sim]": ("failed", INTERNAL),
        "corrupt.rknn.yaml::corrupt[2.5.0-sim]": ("failed", "SPEC"),
        "labels.rknn.yaml::labels[2.5.0-sim]": ("failed", "SPEC"),
        "test_api.py::test_missing_spec[2.5.0-sim]": ("failed", "SPEC"),
        "test_api.py::test_fixture_error[2.5.0-sim]": ("failed", INTERNAL),
        "test_api.py::test_skipped[2.5.0-sim]": ("skipped", None)}
    assert "RuntimeError: the archive is full" in items["hook.rknn.yaml::hook[2.5.0-sim]"]["traceback"]
    assert items["test_api.py::test_missing_spec[2.5.0-sim]"]["message"] == (
        f"{folder / 'missing.rknn.yaml'}: cannot read the spec: No such file or directory")
    assert re.fullmatch(r"dataset_server\(\) in \S+test_api\.py:5 raised ConnectionError: no dataset server .*",
                        items["test_api.py::test_fixture_error[2.5.0-sim]"]["message"])
    assert items["test_api.py::test_skipped[2.5.0-sim]"]["message"] == "Skipped: not today"
    summary = out.split("rknn summary")[1]
    for row in (r"cnn \(a/cnn\.rknn\.yaml\)\s+2\.5\.0\s+sim\s+.*passed", r"cnn \(b/cnn\.rknn\.yaml\)\s+2\.5\.0\s+sim",
                r"hook\s+2\.5\.0\s+sim\s+.*failed\s+INTERNAL", r"missing\s+2\.5\.0\s+sim\s+-\s+-\s+failed\s+SPEC",
                r"cnn \(a/cnn\.rknn\.yaml\)\s+2\.5\.0\s+sim\s+-\s+-\s+skipped"):
        assert re.search(rf"^{row}", summary, re.M), row

    # The HTML report of the same document: a section per spec file, every failure with its details.
    page = render(document)
    assert {"cnn (a/cnn.rknn.yaml)", "cnn (b/cnn.rknn.yaml)", "hook", "corrupt", "labels", "missing"} == set(
        re.findall(r'<section class="spec" id="[^"]+"><h2>(.*?) <span', page))
    for node, item in items.items():
        assert (node in page) == (item["outcome"] == "failed"), node  # failure details name the node
    assert page.count(">skipped</span>") >= 1 and "RuntimeError: the archive is full" in page

    # Two specs of one name: two job folders, each with its own model; two baseline files.
    jobs = sorted((basetemp / "rknn").glob("cnn-*/2.5.0/job.json"))
    assert len(jobs) == 2 and {json.loads(j.read_text())["model"] for j in jobs} == {
        str(folder / "a" / "cnn.onnx"), str(folder / "b" / "cnn.onnx")}
    # The baselines that could be written were; the corrupt one was left as it was.
    assert sorted(str(p.relative_to(folder / "bl")) for p in (folder / "bl").rglob("*.json")) == [
        "a/cnn.json", "b/cnn.json", "corrupt.json"]
    assert (folder / "bl" / "corrupt.json").read_text().startswith("<<<<<<<")
    assert "pytest-rknn: baseline bl/corrupt.json: NOT updated: not a pytest-rknn baseline" in out
    # The HTML report could not be written: one line, and the JSON report and baselines were still written.
    assert re.search(r"^pytest-rknn: HTML report NOT written to \S+out/report\.html: IsADirectoryError: ", out, re.M)
    assert f"pytest-rknn: JSON report: {report}" in out


def test_a_report_path_that_is_a_folder_is_a_usage_error_before_anything_runs(run_pytest, pytester):
    (pytester.path / "reports").mkdir()
    for option in ("--rknn-json", "--rknn-html"):
        result, _ = run_pytest(f"{option}=reports")
        assert result.ret == 4
        result.stderr.fnmatch_lines([f"*{option}: {pytester.path / 'reports'} is a folder; give a file path*"])
        assert "Traceback" not in result.stderr.str()


def test_an_unexpected_exception_says_whose_code_raised_it_and_keeps_the_traceback(tmp_path):
    try:
        format_cosine("0.5")  # a real bug's shape: a wrong type deep inside pytest-rknn
    except TypeError as exc:
        message, trace = describe_exception(exc)
    assert re.fullmatch(r"pytest-rknn internal error: TypeError: .* \(at pytest_rknn/result\.py:\d+\) — please "
                        r"report it, with the traceback from the 'rknn traceback' section", message), message
    assert "Traceback (most recent call last)" in trace and "format_cosine" in trace
    user_code = tmp_path / "conftest.py"
    user_code.write_text("def hook():\n    raise KeyError('spec')\n")
    namespace = {}
    exec(compile(user_code.read_text(), str(user_code), "exec"), namespace)
    try:
        namespace["hook"]()
    except KeyError as exc:
        message, _ = describe_exception(exc)
    assert message.startswith(f"hook() in {user_code}:2 raised KeyError: 'spec' (code outside pytest-rknn")


def test_a_result_that_cannot_be_recorded_is_recorded_as_an_internal_error():
    item = SimpleNamespace(nodeid="x.rknn.yaml::x[2.5.0-sim]", user_properties=[])
    broken = RunResult(spec="x", version="2.5.0", backend="sim", timings={"build": "slow"})  # not a number
    recorded = record_result(item, broken)
    record = getattr(item, RECORD_ATTRIBUTE)
    assert recorded.failure_class == record["class"] == INTERNAL and record["nodeid"] == item.nodeid
    assert record["message"].startswith("pytest-rknn internal error: TypeError: ")
    assert ("rknn.class", INTERNAL) in item.user_properties


def test_a_spec_that_is_neither_a_path_nor_a_dict_is_spec_not_internal(tmp_path):
    runner = RknnRunner(provisioner=None, toolkits=[ToolkitRequest("2.5.0")], work_root=tmp_path)
    result = runner.run(42)
    assert (result.failure_class, result.message) == (
        "SPEC", "the spec given to rknn.run() or @pytest.mark.rknn_spec is 42 (int); give a path to a "
                "*.rknn.yaml file or a dict")


def test_every_board_failure_says_whether_the_conversion_or_the_board_runtime_broke_it(board_pytest, test_board,
                                                                                      pytester, tmp_path):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    for name in ("segv", "hang", "none_outputs"):
        write_spec(pytester.path, name, "model: cnn.onnx\n")
        board_pytest.board.set_fault(f"{name}.rknn", name)
    write_spec(pytester.path, "strict_segv", "model: cnn.onnx\nchecks: {cosine: {min: 0.99999999}}\n")
    board_pytest.board.set_fault("strict_segv.rknn", "segv")
    report = tmp_path / "report.json"
    result, _ = board_pytest("--rknn-board-timeout=5", f"--rknn-json={report}")
    out = result.stdout.str()
    assert dict(FAILURE_LINE.findall(out)) == {
        "segv.rknn.yaml::segv[2.5.0-board]": "CRASH", "hang.rknn.yaml::hang[2.5.0-board]": "TIMEOUT",
        "none_outputs.rknn.yaml::none_outputs[2.5.0-board]": "BUILD",
        "strict_segv.rknn.yaml::strict_segv[2.5.0-sim]": "ACCURACY",
        "strict_segv.rknn.yaml::strict_segv[2.5.0-board]": "CRASH"}
    messages = {i["spec"]: i["message"] for i in json.loads(report.read_text())["items"] if i["backend"] == "board"}
    runtime, conversion = ("; the simulator passes, so the board runtime broke it",
                           "; the simulator fails too, so the conversion broke it")
    assert messages["segv"].startswith(f"board 127.0.0.1:{test_board.port}: runner killed by SIGSEGV during inference")
    assert messages["hang"].startswith(f"board 127.0.0.1:{test_board.port}: no result after 5 s")
    assert "inference() returned None" in messages["none_outputs"]
    for spec in ("segv", "hang", "none_outputs"):
        assert messages[spec].endswith(runtime), messages[spec]
        assert re.search(rf"^\[\w+\] {spec}\[2\.5\.0-board\]: .*{re.escape(runtime)}$", out, re.M), spec  # one line
    assert messages["strict_segv"].startswith(f"board 127.0.0.1:{test_board.port}: runner killed by SIGSEGV")
    assert messages["strict_segv"].endswith(conversion)
