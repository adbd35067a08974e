"""Reduction of a BUILD or CRASH: the smallest sub-graph of the ONNX model that fails the same way.

When a simulator job fails in class BUILD or CRASH and the toolkit's own lines name no node of the
model (`Failed to config layer: 'Conv:y'` names one; a SIGSEGV in build() with no error line names
none), the model is cut into sub-models with onnx's own `onnx.utils.Extractor`, nodes in topological
order, and each candidate runs as an ordinary simulator job (`toolkit.client.run_worker`, the same
classification) in `JOB_DIR/reduce/NN-LABEL/`:

1. prefixes: the first k+1 nodes, outputs every tensor of theirs that a later node or the graph
   needs; bisected for the smallest k that fails the same way. Node k is *the* node: with it the
   model fails, without it (and everything after it) it does not;
2. then from the front: node k alone (its inputs become the sub-model's inputs, random data of the
   shape and dtype that shape inference gives), else windows of the nodes j..k that node k depends
   on, bisected for the largest j that still fails.

"The same way" is the same class and step, and the same signal (CRASH) or the same exception type
or -1 (BUILD). The smallest failing candidate is copied to `JOB_DIR/reduced.onnx`. It runs within a
time budget (`--rknn-reduce-budget`); a crashing candidate costs a fresh worker, which imports the
toolkit again (about 4 s). It adds evidence to the result; it never changes the outcome or class.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np

from ..errors import BUILD, CRASH, TIMEOUT, RknnError

REDUCE_FOLDER = "reduce"
REDUCED_MODEL = "reduced.onnx"
DEFAULT_BUDGET_SECONDS = 120.0
REDUCED_CLASSES = (BUILD, CRASH)
NOT_REPRODUCED_SIGNALS = ("SIGKILL", "SIGTERM", "SIGINT")  # our own kill (end of session, Ctrl-C) or the OOM killer
MIN_CANDIDATE_SECONDS = 5.0  # a candidate gets at least this long (a fresh worker imports the toolkit in ~4 s)


class OutOfBudget(Exception):
    """The time budget ended before the search did."""


# ------------------------------------------------------------------ what failed, and does the toolkit name it


def signature(exc: RknnError) -> Optional[Tuple[str, ...]]:
    """How a job failed, as far as a candidate must fail alike: (class, step, signal | exception type | -1).
    None for failures that are not reduced (another class, or a kill that is no fault of the model)."""
    message = exc.message
    if exc.failure_class == CRASH:
        match = re.search(r"killed by (\S+) during (\S+)", message)
        if not match or match.group(1) in NOT_REPRODUCED_SIGNALS:
            return None
        return (CRASH, match.group(2), match.group(1))
    if exc.failure_class == BUILD:
        match = re.search(r": (\w+)\(\) raised (\w+(?:\.\w+)*)", message)
        if match:
            return (BUILD, match.group(1), match.group(2))
        match = re.search(r": (\w+)\(\) returned (-1|None)", message)  # None: RKNNLite.inference() on a board
        if match:
            return (BUILD, match.group(1), match.group(2))
        match = re.search(r": (\w+) raised (\w+(?:\.\w+)*)", message)  # the worker left no result
        if match:
            return (BUILD, match.group(1), match.group(2))
        return (BUILD,)
    return None


def named_node(text: str, nodes: Sequence[Tuple[str, str, Sequence[str]]]) -> Optional[str]:
    """The node that the toolkit's own text names, if any: a quoted node name or output tensor, also as
    the toolkit writes layers (`'Conv:y'`; 2.2.0 `'Conv:Conv_y'`; `NonZero('nonzero')`).
    librknnrt's `failed to submit!, op id: 1, op name: Conv:conv1`). `nodes` are (name, op_type, outputs)."""
    quoted = set(re.findall(r"'([^'\n]+)'", text or "")) | set(re.findall(r"op name: ([^\s,]+)", text or ""))
    for name, op_type, outputs in nodes:
        for candidate in quoted:
            tail = candidate.split(":", 1)[1] if ":" in candidate else candidate
            tails = {candidate, tail, tail[len(op_type) + 1:] if tail.startswith(op_type + "_") else tail}
            if (name and name in tails) or tails & set(outputs):
                return name or outputs[0]
    return None


# ------------------------------------------------------------------ the search (pure logic)


def smallest_failing_prefix(count: int, fails: Callable[[int], bool]) -> int:
    """The smallest k for which prefix k (nodes 0..k) fails, given that prefix count-1 (the model) does.
    Bisection: ceil(log2(count)) calls of fails(k)."""
    low, high = 0, count - 1
    while low < high:
        middle = (low + high) // 2
        if fails(middle):
            high = middle
        else:
            low = middle + 1
    return high


def largest_failing_start(node: int, fails: Callable[[int], bool]) -> Optional[int]:
    """The largest j for which the window j..node fails: node alone first, then the window from 0 (all
    that node depends on), then bisection between them; None when even the window from 0 does not fail."""
    if fails(node):
        return node
    if node == 0 or not fails(0):
        return None
    low, high = 0, node  # low fails, high does not
    while high - low > 1:
        middle = (low + high) // 2
        if fails(middle):
            low = middle
        else:
            high = middle
    return low


# ------------------------------------------------------------------ cutting the graph


@dataclass(frozen=True)
class Cut:
    label: str = field(compare=False)
    inputs: Tuple[str, ...] = ()
    outputs: Tuple[str, ...] = ()
    nodes: int = field(default=0, compare=False)  # how many nodes the sub-model has


class Graph:
    """An ONNX model's nodes in topological order, its shapes inferred with its inputs at the data's shapes."""

    def __init__(self, model_path: Path, input_shapes: Dict[str, Tuple[int, ...]]):
        import onnx
        import onnx.utils

        model = onnx.load(str(model_path))
        for value in model.graph.input:
            shape = input_shapes.get(value.name)
            if shape is not None and len(shape) == len(value.type.tensor_type.shape.dim):
                for dim, size in zip(value.type.tensor_type.shape.dim, shape):
                    dim.Clear()
                    dim.dim_value = int(size)
        self.model = onnx.shape_inference.infer_shapes(model)
        graph = self.model.graph
        self.nodes = list(graph.node)
        self.initializers = {t.name for t in graph.initializer}
        self.graph_inputs = [v.name for v in graph.input if v.name not in self.initializers]
        self.graph_outputs = [v.name for v in graph.output]
        self.types: Dict[str, Tuple[int, Optional[Tuple[Optional[int], ...]]]] = {}  # name: (elem type, shape)
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            self.types[value.name] = (tensor.elem_type, tuple(dims) if tensor.HasField("shape") else None)
        for tensor in graph.initializer:
            self.types[tensor.name] = (tensor.data_type, tuple(tensor.dims))
        self.producer = {name: i for i, node in enumerate(self.nodes) for name in node.output if name}
        self.extractor = onnx.utils.Extractor(self.model)

    def __len__(self) -> int:
        return len(self.nodes)

    def node_name(self, k: int) -> str:
        node = self.nodes[k]
        return node.name or node.output[0]

    def facts(self, k: int) -> dict:
        node = self.nodes[k]
        known = [self.types.get(name, (0, None))[1] for name in node.input if name]
        shapes = [list(shape) if shape is not None else None for shape in known]
        return {"node": self.node_name(k), "op_type": node.op_type, "input_shapes": shapes}

    def _cone(self, outputs: Sequence[str], start: int) -> Tuple[List[int], List[str]]:
        """The nodes from index `start` on that `outputs` depend on, and the tensors they take from outside
        (graph inputs, or what nodes before `start` produce), in a stable order."""
        nodes, inputs, stack = set(), [], list(outputs)
        while stack:
            name = stack.pop()
            index = self.producer.get(name)
            if index is None or index < start:
                if name not in self.initializers and name not in inputs:
                    inputs.append(name)
                continue
            if index not in nodes:
                nodes.add(index)
                stack += [n for n in reversed(self.nodes[index].input) if n]
        order = {name: i for i, name in enumerate(self.graph_inputs)}
        inputs.sort(key=lambda n: (order.get(n, len(order)), self.producer.get(n, -1)))
        return sorted(nodes), inputs

    def prefix(self, k: int) -> Cut:
        """Nodes 0..k; its outputs are the tensors of theirs that a later node or the graph needs."""
        later = {name for node in self.nodes[k + 1:] for name in node.input}
        outputs = [name for node in self.nodes[:k + 1] for name in node.output
                   if name and (name in later or name in self.graph_outputs)]
        for name in self.nodes[k].output:
            if name and name not in outputs:
                outputs.append(name)
        nodes, inputs = self._cone(outputs, 0)
        return Cut(f"prefix-{k}", tuple(inputs), tuple(outputs), len(nodes))

    def window(self, start: int, k: int) -> Cut:
        """Of the nodes start..k, those that node k depends on; node k's outputs are the outputs."""
        outputs = [name for name in self.nodes[k].output if name]
        nodes, inputs = self._cone(outputs, start)
        return Cut(f"nodes-{start}-{k}", tuple(inputs), tuple(outputs), len(nodes))

    def cut_is_runnable(self, cut: Cut) -> bool:
        """Every input of a known dtype and a fully known shape (random data can be made for it)."""
        for name in cut.inputs + cut.outputs:
            elem, shape = self.types.get(name, (0, None))
            if not elem or (name in cut.inputs and (shape is None or any(d is None for d in shape))):
                return False
        return True

    def extract(self, cut: Cut, path: Path) -> None:
        import onnx

        model = self.extractor.extract_model(list(cut.inputs), list(cut.outputs))
        onnx.save(model, str(path))

    def random_input(self, name: str, rng: np.random.Generator) -> np.ndarray:
        from onnx import helper

        elem, dims = self.types[name]
        assert dims is not None and None not in dims  # an input of a runnable cut (cut_is_runnable)
        shape = cast(Tuple[int, ...], dims)
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        if dtype == np.bool_:
            return rng.random(shape) < 0.5
        if np.issubdtype(dtype, np.integer):
            return rng.integers(0, 2, size=shape).astype(dtype)  # 0 and 1: valid indices, sizes and counts
        return rng.random(shape).astype(dtype)


# ------------------------------------------------------------------ running the candidates


@dataclass
class Reduction:
    node: Optional[str] = None
    op_type: Optional[str] = None
    input_shapes: Optional[list] = None
    model: Optional[str] = None  # JOB_DIR/reduced.onnx
    nodes: Optional[int] = None  # nodes in the reduced model
    of_nodes: int = 0  # nodes in the model
    candidates: int = 0
    seconds: float = 0.0
    complete: bool = True  # False: the budget ended first; `model` is the smallest failing sub-graph so far
    reproduced: bool = True  # False: a copy of the whole model, built and run again, did not fail the same way
    tried: List[dict] = field(default_factory=list)  # per candidate: folder, nodes, fails, seconds

    def record(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "input_shapes": self.input_shapes, "model": self.model,
                "nodes": self.nodes, "of_nodes": self.of_nodes, "candidates": self.candidates,
                "seconds": round(self.seconds, 2), "complete": self.complete, "reproduced": self.reproduced,
                "tried": self.tried}

    def sentence(self, budget: float) -> Optional[str]:
        """What goes after the failure message; None when nothing failed alike (then only the record says so)."""
        if self.node is not None:
            shapes = ", ".join("(" + ", ".join(str(d) for d in s) + ")" if s is not None else "?"
                               for s in self.input_shapes or [])
            return f"reduced to node '{self.node}' ({self.op_type}, inputs {shapes}): {self.model}"
        if not self.reproduced:
            return None
        return (f"reduction stopped by --rknn-reduce-budget={budget:g} after {self.candidates} candidates "
                f"({self.seconds:.0f} s); the smallest failing sub-graph so far has {self.nodes} of {self.of_nodes} "
                f"nodes: {self.model}")


RunJob = Callable[[Path, float], object]  # run the job folder within a timeout: return on success (what it
# returns is not used), or raise RknnError


def reduce_failure(job_dir: Path, error: RknnError, run_job: RunJob, budget: float, job_timeout: float,
                   out_dir: Optional[Path] = None, verify_first: bool = False) -> Optional[Reduction]:
    """Reduce the failure `error` of the simulator job in `job_dir` (its job.json, inputs.npz and model say what
    was built and fed); None when it is not a failure to reduce, or the toolkit's own lines already name the node.
    The candidates go to `out_dir`/reduce/ and the reduced model to `out_dir`/reduced.onnx (default: job_dir;
    a board item's are in its board job folder). `run_job(folder, seconds)` runs a candidate's simulator job
    folder (for a board item: builds it, then runs it on the board) and raises its RknnError. With `verify_first`
    (a board item, whose .rknn a rebuild does not reproduce byte for byte) a copy of the whole model runs first,
    and the search stops when it does not fail the same way."""
    wanted = signature(error)
    if wanted is None or budget <= 0:
        return None
    started = time.monotonic()
    job = json.loads((job_dir / "job.json").read_text())
    model_path = Path(job["model"])
    layouts = job.get("data_format", [])
    with np.load(job_dir / "inputs.npz") as data:
        sample = [data[f"s0_i{i}"] for i in range(len(layouts))]
    graph = Graph(model_path, _onnx_shapes(model_path, sample, layouts))
    nodes = [(n.name, n.op_type, list(n.output)) for n in graph.nodes]
    if not nodes or named_node(f"{error.message}\n{error.log_tail or ''}", nodes) is not None:
        return None
    reduction = Reduction(of_nodes=len(graph))
    out_dir = out_dir or job_dir
    folder = out_dir / REDUCE_FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    originals = dict(zip(graph.graph_inputs, zip(sample, layouts)))
    smallest: List[Tuple[int, Path]] = []  # (nodes, model) of every failing candidate
    tried: Dict[Cut, bool] = {}

    def fails(cut: Cut) -> bool:
        if cut in tried:
            return tried[cut]
        remaining = budget - (time.monotonic() - started)
        if remaining <= 0:
            raise OutOfBudget()
        if not graph.cut_is_runnable(cut):
            tried[cut] = False
            return False
        reduction.candidates += 1
        where = folder / f"{reduction.candidates:02d}-{cut.label}"
        t0 = time.monotonic()
        seconds = min(job_timeout, max(remaining, MIN_CANDIDATE_SECONDS))
        ended = _run_candidate(graph, cut, where, job, originals, run_job, seconds)
        if ended == (TIMEOUT,) and seconds < job_timeout:  # cut short by the budget: no answer, not a pass
            reduction.tried.append({"folder": where.name, "nodes": cut.nodes, "fails": None,
                                    "seconds": round(time.monotonic() - t0, 2)})
            raise OutOfBudget()
        failed = ended == wanted
        reduction.tried.append({"folder": where.name, "nodes": cut.nodes, "fails": failed,
                                "seconds": round(time.monotonic() - t0, 2)})
        tried[cut] = failed
        if failed:
            smallest.append((cut.nodes, where / "model.onnx"))
        return failed

    whole = graph.prefix(len(graph) - 1)
    node = None
    try:
        if verify_first and not fails(whole):  # a fresh build of the model itself does not fail so
            reduction.reproduced = False
        else:
            node = last = smallest_failing_prefix(len(graph), lambda k: k == len(graph) - 1 or fails(graph.prefix(k)))
            if len(graph) > 1:
                largest_failing_start(last, lambda j: fails(graph.window(j, last)))
            if not smallest and len(graph) > 1 and not fails(whole):  # no candidate failed: does the model?
                node, reduction.reproduced = None, False
    except OutOfBudget:
        reduction.complete = False
    reduced = out_dir / REDUCED_MODEL
    if not reduction.reproduced:
        pass  # nothing failed: there is no reduced model
    elif smallest:
        shutil.copyfile(min(smallest, key=lambda s: s[0])[1], reduced)
        reduction.nodes = min(s[0] for s in smallest)
    else:  # the model itself is the smallest known to fail (one node, or no candidate failed in time)
        graph.extract(whole, reduced)
        reduction.nodes = whole.nodes
    reduction.model = str(reduced) if reduction.reproduced else None
    if node is not None and reduction.complete:
        reduction.__dict__.update(graph.facts(node))
    reduction.seconds = time.monotonic() - started
    return reduction


def _onnx_shapes(model_path: Path, sample: List[np.ndarray], layouts: List[str]) -> Dict[str, Tuple[int, ...]]:
    """The model inputs' shapes as ONNX sees them (an NHWC array is an NCHW input)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    names = [v.name for v in graph.input if v.name not in initializers]
    shapes = {}
    for name, array, layout in zip(names, sample, layouts):
        shape = array.shape
        if layout == "nhwc" and array.ndim == 4:
            shape = (shape[0], shape[3], shape[1], shape[2])
        shapes[name] = tuple(int(d) for d in shape)
    return shapes


PER_INPUT_KEYS = ("mean_values", "std_values", "dynamic_input", "quant_img_RGB2BGR")


def _run_candidate(graph: Graph, cut: Cut, where: Path, job: dict, originals: dict, run_job: RunJob,
                   timeout: float) -> Optional[Tuple[str, ...]]:
    """Write the candidate's job folder (model.onnx, job.json, inputs.npz) and run it; its failure's signature,
    None when it ran through."""
    where.mkdir(parents=True)
    graph.extract(cut, where / "model.onnx")
    rng = np.random.Generator(np.random.PCG64(13))
    arrays, layouts = [], []
    for name in cut.inputs:
        if name in originals:
            array, layout = originals[name]
        else:
            array = graph.random_input(name, rng)
            layout = "nchw"
        arrays.append(array)
        layouts.append(layout)
    np.savez(where / "inputs.npz", **{f"s0_i{i}": a for i, a in enumerate(arrays)})
    config = dict(job.get("config", {}))
    same_inputs = list(cut.inputs) == list(originals)
    if not same_inputs:  # one value per model input: they no longer fit
        for key in PER_INPUT_KEYS:
            config.pop(key, None)
    config.pop("dynamic_input", None)  # the candidates have the data's shapes
    if isinstance(config.get("op_target"), dict):  # only what the sub-model still has
        import onnx

        sub = onnx.load(str(where / "model.onnx")).graph
        known = {n for node in sub.node for n in node.output} | {node.op_type for node in sub.node}
        config["op_target"] = {k: v for k, v in config["op_target"].items() if k in known}
        if not config["op_target"]:
            del config["op_target"]
    dataset = job.get("dataset")
    if job.get("quantize") and not same_inputs:
        paths = []
        for i, array in enumerate(arrays):
            np.save(where / f"calib_{i}.npy", array)
            paths.append(str(where / f"calib_{i}.npy"))
        (where / "dataset.txt").write_text(" ".join(paths) + "\n")
        dataset = str(where / "dataset.txt")
    description = dict(job, model=str(where / "model.onnx"), config=config, dataset=dataset,
                        rknn_name="candidate.rknn", samples=1, data_format=layouts)
    (where / "job.json").write_text(json.dumps(description, indent=1))
    try:
        run_job(where, timeout)
    except RknnError as exc:
        return (TIMEOUT,) if exc.failure_class == TIMEOUT else signature(exc)
    return None
