"""Reduction of a BUILD or CRASH to the node that causes it (pytest_rknn/diagnosis/reduce.py).

The real case: rknn-toolkit2 2.3.2 and 2.5.0 kill build() with SIGSEGV on a cubic Resize and log no error
line. Inside a six-node chain the failure message alone says nothing about where; reduction names the node.
"""

import json
import re
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS, job_dirs, write_spec

from pytest_rknn.diagnosis.reduce import (DEFAULT_BUDGET_SECONDS, Graph, largest_failing_start, named_node,
                                          reduce_failure, signature, smallest_failing_prefix)
from pytest_rknn.errors import BUILD, CRASH, RknnError

FAILURE_LINE = re.compile(r"^FAILED \S+::(\S+) - \[(\w+)\] (.*)$", re.M)


def make_chain(path, resize_mode="cubic"):
    """x (1,3,8,8) -> conv1 -> relu1 -> upsample (Resize, cubic x2) -> conv2 -> relu2 -> sigmoid -> y (1,8,16,16)."""
    rng = np.random.Generator(np.random.PCG64(7))
    w1 = (rng.random((8, 3, 3, 3)) - 0.5).astype(np.float32)
    w2 = (rng.random((8, 8, 3, 3)) - 0.5).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Resize", ["r1", "roi", "scales"], ["up"], name="upsample", mode=resize_mode),
        helper.make_node("Conv", ["up", "w2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Sigmoid", ["r2"], ["y"], name="sigmoid"),
    ]
    initializers = [numpy_helper.from_array(a, n) for n, a in (
        ("w1", w1), ("w2", w2), ("roi", np.zeros(0, np.float32)), ("scales", np.array([1, 1, 2, 2], np.float32)))]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------ the search and its pieces, without a toolkit


@pytest.mark.parametrize("count, culprit", [(1, 0), (2, 1), (6, 2), (7, 0), (200, 137), (200, 199)])
def test_bisection_finds_the_first_failing_prefix_in_log2_calls(count, culprit):
    calls = []
    found = smallest_failing_prefix(count, lambda k: calls.append(k) or k >= culprit)
    assert found == culprit
    assert len(calls) <= max(1, (count - 1).bit_length())


def test_front_shrinking_takes_the_node_alone_or_the_largest_start_that_fails():
    assert largest_failing_start(5, lambda j: True) == 5  # the node alone: one call
    calls = []
    assert largest_failing_start(9, lambda j: calls.append(j) or j <= 3) == 3
    assert calls[:2] == [9, 0] and len(calls) <= 2 + 4
    assert largest_failing_start(4, lambda j: False) is None  # needs more than the nodes it depends on


def test_signature_is_the_class_step_and_signal_or_exception():
    crash = RknnError(CRASH, "rknn-toolkit2 2.5.0: worker killed by SIGSEGV during build (the toolkit logged no "
                             "error line; see the log tail)")
    assert signature(crash) == (CRASH, "build", "SIGSEGV")
    assert signature(RknnError(BUILD, "rknn-toolkit2 2.5.0: build() raised ValueError: The input 0 ...")) == \
        (BUILD, "build", "ValueError")
    assert signature(RknnError(BUILD, "rknn-toolkit2 2.5.0: load_onnx() returned -1: E ...")) == \
        (BUILD, "load_onnx", "-1")
    assert signature(RknnError(CRASH, "rknn-toolkit2 2.5.0: worker killed by SIGKILL during build")) is None


def test_a_node_the_toolkit_names_is_not_reduced():
    nodes = [("conv1", "Conv", ["c1"]), ("y", "Conv", ["y"]), ("nonzero", "NonZero", ["indices"])]
    assert named_node("E RKNN: Failed to config layer: 'Conv:y', Fatal Error", nodes) == "y"
    assert named_node("E RKNN: Failed to config layer: 'Conv:Conv_y'", nodes) == "y"  # 2.2.0
    assert named_node("build() raised ValueError: The input 0 of NonZero('nonzero') need to be constant", nodes) \
        == "nonzero"
    assert named_node("E RKNN: failed to submit!, op id: 1, op name: Conv:conv1, flags: 0x5", nodes) == "conv1"
    assert named_node("worker killed by SIGSEGV during build (the toolkit logged no error line)", nodes) is None


def test_cuts_are_prefixes_and_windows_in_topological_order(tmp_path):
    graph = Graph(make_chain(tmp_path / "chain.onnx"), {"x": (1, 3, 8, 8)})
    assert [n.name for n in graph.nodes] == ["conv1", "relu1", "upsample", "conv2", "relu2", "sigmoid"]
    prefix = graph.prefix(2)
    assert (prefix.inputs, prefix.outputs, prefix.nodes) == (("x",), ("up",), 3)
    alone = graph.window(2, 2)
    assert (alone.inputs, alone.outputs, alone.nodes) == (("r1",), ("up",), 1)
    assert graph.facts(2) == {"node": "upsample", "op_type": "Resize", "input_shapes": [[1, 8, 8, 8], [0], [4]]}
    graph.extract(alone, tmp_path / "alone.onnx")
    cut = onnx.load(str(tmp_path / "alone.onnx"))
    onnx.checker.check_model(cut)
    assert [n.name for n in cut.graph.node] == ["upsample"] and [i.name for i in cut.graph.input] == ["r1"]


def fake_job(tmp_path):
    """A failed simulator job folder as the runner leaves it, for the chain model."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    model = make_chain(tmp_path / "chain.onnx")
    (job_dir / "job.json").write_text(json.dumps({
        "model": str(model), "target": "rk3588", "config": {"mean_values": [[0, 0, 0]], "std_values": [[1, 1, 1]]},
        "quantize": False, "dataset": None, "rknn_name": "chain.rknn", "verbose": False, "samples": 1,
        "data_format": ["nchw"]}))
    np.savez(job_dir / "inputs.npz", s0_i0=np.zeros((1, 3, 8, 8), np.float32))
    return job_dir


def crashes_on_resize(folder, seconds):
    """A stand-in for the toolkit: SIGSEGV in build() whenever the candidate has a Resize."""
    if any(n.op_type == "Resize" for n in onnx.load(str(folder / "model.onnx")).graph.node):
        raise RknnError(CRASH, "rknn-toolkit2 2.5.0: worker killed by SIGSEGV during build (the toolkit logged no "
                               "error line; see the log tail)")


SEGV = RknnError(CRASH, "rknn-toolkit2 2.5.0: worker killed by SIGSEGV during build (the toolkit logged no error "
                        "line; see the log tail)")


def test_reduce_failure_writes_candidates_and_the_reduced_model(tmp_path):
    job_dir = fake_job(tmp_path)
    reduction = reduce_failure(job_dir, SEGV, crashes_on_resize, budget=60, job_timeout=600)
    assert (reduction.node, reduction.op_type, reduction.candidates, reduction.nodes) == ("upsample", "Resize", 3, 1)
    assert [t["folder"] for t in reduction.tried] == ["01-prefix-2", "02-prefix-1", "03-nodes-2-2"]
    # the prefix keeps the model's input, its sample and its normalisation; the node alone gets neither
    prefix, alone = (json.loads((job_dir / "reduce" / f / "job.json").read_text()) for f in ("01-prefix-2",
                                                                                          "03-nodes-2-2"))
    assert prefix["config"] == {"mean_values": [[0, 0, 0]], "std_values": [[1, 1, 1]]} and alone["config"] == {}
    with np.load(job_dir / "reduce" / "03-nodes-2-2" / "inputs.npz") as data:
        assert data["s0_i0"].shape == (1, 8, 8, 8) and data["s0_i0"].dtype == np.float32
    assert reduction.sentence(60) == (f"reduced to node 'upsample' (Resize, inputs (1, 8, 8, 8), (0), (4)): "
                                      f"{job_dir / 'reduced.onnx'}")
    reduced = onnx.load(str(job_dir / "reduced.onnx"))  # the node alone, a model that loads and runs
    onnx.checker.check_model(reduced, full_check=True)
    assert [(n.name, n.op_type) for n in reduced.graph.node] == [("upsample", "Resize")]
    assert [i.name for i in reduced.graph.input] == ["r1"] and [o.name for o in reduced.graph.output] == ["up"]
    import onnxruntime

    session = onnxruntime.InferenceSession(reduced.SerializeToString(), providers=["CPUExecutionProvider"])
    [up] = session.run(None, {"r1": np.ones((1, 8, 8, 8), np.float32)})
    assert up.shape == (1, 8, 16, 16) and np.allclose(up, 1.0)
    # a failure of another kind in a candidate is not the same failure
    other = RknnError(CRASH, "rknn-toolkit2 2.5.0: worker killed by SIGABRT during build: E RKNN: ...")
    assert reduce_failure(job_dir, other, crashes_on_resize, budget=60, job_timeout=600).node is None


def test_an_exhausted_budget_names_the_smallest_failing_sub_graph_so_far(tmp_path):
    job_dir = fake_job(tmp_path)
    reduction = reduce_failure(job_dir, SEGV, crashes_on_resize, budget=1e-9, job_timeout=600)
    assert not reduction.complete and reduction.node is None and reduction.candidates == 0
    assert reduction.nodes == 6
    whole = onnx.load(str(job_dir / "reduced.onnx"))  # nothing cut yet: the smallest failing graph is all of it
    assert [n.name for n in whole.graph.node] == ["conv1", "relu1", "upsample", "conv2", "relu2", "sigmoid"]
    assert reduction.sentence(1e-9).startswith("reduction stopped by --rknn-reduce-budget=1e-09 after 0 candidates")
    assert reduce_failure(job_dir, SEGV, crashes_on_resize, budget=0, job_timeout=600) is None  # off


# ------------------------------------------------------------------ the real toolkit


def test_a_build_segfault_that_names_no_node_is_reduced_to_the_node(run_pytest, pytester):
    """2.3.2 and 2.5.0 segfault in build() on the chain, logging no error line; the message names the Resize and
    JOB_DIR/reduced.onnx holds it alone, within the default budget."""
    make_chain(pytester.path / "chain.onnx")
    write_spec(pytester.path, "chain", "model: chain.onnx\n")
    report = pytester.path / "report.json"
    result, basetemp = run_pytest(str(pytester.path), f"--rknn-json={report}", "--rknn-no-cache",
                                  "--rknn-toolkit=2.3.2,2.5.0")
    result.assert_outcomes(failed=2)
    items = {i["version"]: i for i in json.loads(report.read_text())["items"]}
    for version in ("2.3.2", "2.5.0"):
        item = items[version]
        assert item["class"] == CRASH  # the class never changes
        job_dir = job_dirs(basetemp, "chain")[version]
        reduction = item["reduction"]
        assert (reduction["node"], reduction["op_type"], reduction["input_shapes"]) == \
            ("upsample", "Resize", [[1, 8, 8, 8], [0], [4]])
        assert reduction["model"] == str(job_dir / "reduced.onnx") and reduction["complete"]
        assert reduction["seconds"] <= DEFAULT_BUDGET_SECONDS
        assert item["message"].startswith(f"rknn-toolkit2 {version}: worker killed by SIGSEGV during build (the "
                                          f"toolkit logged no error line; see the log tail)")
        assert item["message"].endswith(f"; reduced to node 'upsample' (Resize, inputs (1, 8, 8, 8), (0), (4)): "
                                        f"{job_dir / 'reduced.onnx'}")
        reduced = onnx.load(str(job_dir / "reduced.onnx"))
        assert [(n.name, n.op_type) for n in reduced.graph.node] == [("upsample", "Resize")]
        # every candidate is a simulator job of its own under JOB_DIR/reduce/, classified like the item
        folders = sorted(p.name for p in (job_dir / "reduce").iterdir())
        assert len(folders) == reduction["candidates"] == len(reduction["tried"]) <= 5
        for tried in reduction["tried"]:
            log = (job_dir / "reduce" / tried["folder"] / "log.txt").read_text()
            assert "[pytest-rknn] step: build" in log
            assert tried["fails"] == ("[pytest-rknn] step: inference" not in log)
        print(f"{version} reduction: {reduction['candidates']} candidates, {reduction['seconds']} s: "
              f"{reduction['tried']}")


def test_reduction_is_off_with_a_zero_budget_and_a_passing_model_is_never_reduced(run_pytest, pytester):
    make_chain(pytester.path / "chain.onnx")
    make_chain(pytester.path / "linear.onnx", resize_mode="linear")
    write_spec(pytester.path, "chain", "model: chain.onnx\n")
    write_spec(pytester.path, "linear", "model: linear.onnx\n")
    report = pytester.path / "report.json"
    result, basetemp = run_pytest(str(pytester.path), f"--rknn-json={report}", "--rknn-reduce-budget=off")
    result.assert_outcomes(passed=1, failed=1)
    items = {i["spec"]: i for i in json.loads(report.read_text())["items"]}
    assert items["chain"]["class"] == CRASH and items["chain"]["reduction"] is None
    assert "reduced" not in items["chain"]["message"]
    assert not (job_dirs(basetemp, "chain")["2.5.0"] / "reduce").exists()
    assert items["linear"]["class"] is None and items["linear"]["reduction"] is None


# ------------------------------------------------------------------ a board runtime that crashes on one op


def test_a_board_crash_on_one_op_is_reduced_with_board_runs_of_sub_models(board_pytest, pytester):
    """The board's runtime (the rknnlite double) segfaults in run() on any model that has a MaxPool; the
    simulator passes. Each candidate is built by the simulator, registered, uploaded and hash-checked like the
    item's own model, and run on the board; the reduction names the MaxPool."""
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    board_pytest.board.set_op_fault("MaxPool", "segv")
    report = pytester.path / "report.json"
    result, basetemp = board_pytest(f"--rknn-json={report}", "--rknn-no-cache")
    result.assert_outcomes(passed=1, failed=1)
    items = {i["backend"]: i for i in json.loads(report.read_text())["items"]}
    board = items["board"]
    assert board["class"] == CRASH and items["sim"]["class"] is None
    reduction = board["reduction"]
    job_dir = job_dirs(basetemp, "cnn")["2.5.0-board"]
    assert (reduction["node"], reduction["op_type"], reduction["input_shapes"]) == ("pool", "MaxPool", [[1, 16, 16, 16]])
    assert reduction["model"] == str(job_dir / "reduced.onnx") and reduction["complete"] and reduction["reproduced"]
    assert reduction["seconds"] <= DEFAULT_BUDGET_SECONDS
    assert re.search(r"runner killed by SIGSEGV during inference.*; the simulator passes, so the board runtime broke "
                     r"it.*; reduced to node 'pool' \(MaxPool, inputs \(1, 16, 16, 16\)\): ", board["message"])
    assert [n.op_type for n in onnx.load(str(job_dir / "reduced.onnx")).graph.node] == ["MaxPool"]
    # every candidate went to the board as a model of its own (its own sha256), and crashed there exactly when
    # it has the MaxPool
    runs = [c for c in board_pytest.board.calls() if c["event"] == "rknn_init"]
    assert len(runs) == 1 + len(reduction["tried"]) and len({r["sha256"] for r in runs}) == len(runs)
    assert sum(r["fault"] == "segv" for r in runs) == 1 + sum(t["fails"] for t in reduction["tried"])
    for tried in reduction["tried"]:
        has_pool = "MaxPool" in {n.op_type for n in onnx.load(str(job_dir / "reduce" / tried["folder"] /
                                                                   "model.onnx")).graph.node}
        assert tried["fails"] == has_pool, tried
    print(f"board reduction: {reduction['candidates']} candidates, {reduction['seconds']} s: {reduction['tried']}")
