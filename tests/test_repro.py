"""Repro bundles end to end: a failed item's folder, and its repro.py run by hand without pytest-rknn, in the
real toolkit environment (simulator) and with the test board's Python (board)."""

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np

from conftest import IMAGES, MODELS, TOOLKIT_CACHE, write_spec

from pytest_rknn.toolkit.envs import Provisioner, ToolkitRequest

FAILURE_LINE = re.compile(r"^FAILED \S+::(.+?) - \[(\w+)\]", re.M)
STRICT_INT8 = """
model: cnn.onnx
inputs:
  images: {images: inputs/*.png, limit: 4}
convert:
  mean_values: [[0, 0, 0]]
  std_values: [[255, 255, 255]]
  quantize: {dataset: calib/*.png}
checks:
  cosine: {min: 0.99999}   # an int8 build of cnn.onnx reaches about 0.9999: too strict on purpose
"""


def toolkit_python():
    return Provisioner(TOOLKIT_CACHE).python_for(ToolkitRequest("2.5.0"))


def run_repro(python, bundle, timeout=300):
    """repro.py by hand, as a user would: its own Python, another current directory, no pytest-rknn."""
    return subprocess.run([str(python), str(bundle / "repro.py")], cwd=bundle.parent, capture_output=True,
                          text=True, timeout=timeout)


def json_items(report):
    return {f"{i['spec']}[{i['version']}-{i['backend']}]": i for i in json.loads(report.read_text())["items"]}


def test_a_failing_simulator_item_gets_a_bundle_whose_repro_prints_the_same_failing_metric(run_pytest, pytester,
                                                                                           tmp_path):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    for name in ("inputs", "calib"):
        shutil.copytree(IMAGES, pytester.path / name)
    write_spec(pytester.path, "strict_int8", STRICT_INT8)
    write_spec(pytester.path, "schema_typo", "model: cnn.onnx\nchecks: {cosine: {mni: 0.9}}\n")
    report = tmp_path / "report.json"
    result, basetemp = run_pytest(f"--rknn-json={report}")
    out = result.stdout.str()
    assert dict(FAILURE_LINE.findall(out)) == {"strict_int8[2.5.0-sim]": "ACCURACY",
                                               "schema_typo[2.5.0-sim]": "SPEC"}
    items = json_items(report)
    item = items["strict_int8[2.5.0-sim]"]
    bundle = basetemp / "rknn" / next((basetemp / "rknn").glob("strict_int8-*")).name / "2.5.0" / "repro"
    # Its path is in the failure text and the JSON report; a SPEC failure has nothing to reproduce.
    assert item["repro"] == str(bundle)
    assert f"  repro: {bundle}" in out.splitlines()
    assert items["schema_typo[2.5.0-sim]"]["repro"] is None
    assert not list((basetemp / "rknn").glob("schema_typo-*/*/repro"))

    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert {"repro.py", "repro.json", "inputs.npz", "reference.npz", "outputs.npz", "strict_int8.rknn",
            "model/cnn.onnx", "dataset.txt", "spec.yaml", "fingerprint.json", "log.txt", "README.txt"} <= names
    source = (bundle / "repro.py").read_text()
    assert not re.search(r"^\s*(import|from) pytest_rknn", source, re.M)  # standalone: numpy and the toolkit
    config = json.loads((bundle / "repro.json").read_text())
    assert config["data_format"] == ["nhwc"] and config["quantize"] is True  # images are NHWC uint8
    assert config["config"] == {"mean_values": [[0, 0, 0]], "std_values": [[255, 255, 255]]}
    # Only the failing sample: the one each failure line names.
    failing = sorted({int(s) for s in re.findall(r"sample (\d+)", " ".join(item["failures"]))})
    assert [s["index"] for s in config["samples"]] == failing
    with np.load(bundle / "inputs.npz") as inputs, np.load(bundle / "reference.npz") as reference:
        assert sorted(inputs.files) == [f"s{s}_i0" for s in failing]
        assert sorted(reference.files) == sorted(f"s{s}_o{k}" for s in failing for k in range(2))
    spec = (bundle / "spec.yaml").read_text()
    assert f"model: {pytester.path / 'cnn.onnx'}" in spec and f"{pytester.path / 'calib'}/*.png" in spec
    assert json.loads((bundle / "fingerprint.json").read_text()) == item["fingerprint"]
    assert str(toolkit_python()) in (bundle / "README.txt").read_text()  # the exact command
    assert len((bundle / "dataset.txt").read_text().splitlines()) == len(list(IMAGES.glob("*.png")))

    # Moved elsewhere (as attached to a bug report), run by hand in the toolkit's environment: the same
    # failing metric, output, sample and cosine to the plugin's printed precision.
    attached = tmp_path / "attached" / "bundle"
    shutil.copytree(bundle, attached)
    ran = run_repro(toolkit_python(), attached)
    assert ran.returncode == 1, ran.stdout[-3000:] + ran.stderr[-3000:]
    printed = [line[len("FAIL "):] for line in ran.stdout.splitlines() if line.startswith("FAIL ")]
    assert printed == item["failures"]
    assert f"[repro] reproduced: {len(printed)} failing check(s); the first: {item['failures'][0]}" in ran.stdout
    assert (attached / "build" / "rebuilt.rknn").is_file() and (attached / "repro_outputs.npz").is_file()


def test_build_and_crash_bundles_reproduce_the_failing_call(run_pytest, pytester, tmp_path):
    for model in ("build_fail", "conv_abort"):
        shutil.copy(MODELS / f"{model}.onnx", pytester.path / f"{model}.onnx")
        write_spec(pytester.path, model, f"model: {model}.onnx\n")
    report = tmp_path / "report.json"
    result, basetemp = run_pytest(f"--rknn-json={report}")
    assert dict(FAILURE_LINE.findall(result.stdout.str())) == {"build_fail[2.5.0-sim]": "BUILD",
                                                               "conv_abort[2.5.0-sim]": "CRASH"}
    items = json_items(report)
    build_fail = items["build_fail[2.5.0-sim]"]
    conv_abort = items["conv_abort[2.5.0-sim]"]
    for item in (build_fail, conv_abort):
        bundle = item["repro"] and Path(item["repro"])
        assert bundle and (bundle / "repro.py").is_file() and (bundle / "model").is_dir(), item["spec"]
        assert not list(bundle.glob("*.rknn")), item["spec"]  # no build, no .rknn: the model and config instead
        assert item["repro"] in result.stdout.str()

    # BUILD: the same toolkit call fails with the same words, and the bundle keeps sample 0's small inputs.
    bundle = Path(build_fail["repro"])
    assert (bundle / "inputs.npz").is_file()
    ran = run_repro(toolkit_python(), bundle)
    assert ran.returncode == 2, ran.stdout[-3000:] + ran.stderr[-3000:]
    words = re.search(r"build\(\) raised (ValueError: The input 0 of NonZero\('nonzero'\) need to be constant!)",
                      build_fail["message"]).group(1)
    assert f"build failed: build() raised {words}" in ran.stdout

    # CRASH: the build kills repro.py as it killed the worker (SIGABRT), after the toolkit's same line. The
    # failure came before inference(): the 232 MB input array is left out of the bundle.
    bundle = Path(conv_abort["repro"])
    assert not (bundle / "inputs.npz").exists() and json.loads((bundle / "repro.json").read_text())["samples"] == []
    ran = run_repro(toolkit_python(), bundle)
    assert ran.returncode == -signal.SIGABRT, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "Failed to config layer: 'Conv:y', Fatal Error" in ran.stdout + ran.stderr
    assert "worker killed by SIGABRT during build" in conv_abort["message"]


def test_a_failing_board_item_gets_a_bundle_that_the_boards_python_reproduces(board_pytest, pytester, tmp_path):
    """The test board's runtime drifts from the simulator (seeded noise): the board item fails
    checks.vs_sim_cosine; its bundle's repro.py, run with the board's Python (numpy and rknnlite only), loads
    the saved .rknn and prints the same board-vs-simulator cosine."""
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "drifty", "model: cnn.onnx\n")
    board_pytest.board.set_fault("drifty.rknn", "drift")
    report = tmp_path / "report.json"
    result, basetemp = board_pytest(f"--rknn-json={report}")
    assert dict(FAILURE_LINE.findall(result.stdout.str())) == {"drifty[2.5.0-board]": "ACCURACY"}
    items = json_items(report)
    assert items["drifty[2.5.0-sim]"]["repro"] is None  # it passed
    item = items["drifty[2.5.0-board]"]
    bundle = Path(item["repro"])
    assert bundle.parent.name == "2.5.0-board" and f"  repro: {bundle}" in result.stdout.str().splitlines()
    names = {p.name for p in bundle.iterdir()}
    assert {"repro.py", "repro.json", "drifty.rknn", "inputs.npz", "reference.npz", "outputs.npz",
            "simulator_outputs.npz", "log.txt", "build_log.txt", "fingerprint.json", "spec.yaml"} <= names
    assert "model" not in names  # the board runs the .rknn, not the ONNX model
    config = json.loads((bundle / "repro.json").read_text())
    assert config["backend"] == "board" and config["core_mask"] == "NPU_CORE_AUTO"
    assert json.loads((bundle / "fingerprint.json").read_text())["board"]["soc"]

    ran = run_repro(board_pytest.board.python, bundle, timeout=120)
    assert ran.returncode == 1, ran.stdout[-3000:] + ran.stderr[-3000:]
    plugin = dict(re.findall(r"output '(\w+)': board vs simulator cosine (\S+) <", " ".join(item["failures"])))
    printed = dict(re.findall(r"^FAIL output '(\w+)' sample \d+: board vs simulator cosine (\S+) <", ran.stdout, re.M))
    assert plugin and printed == plugin
