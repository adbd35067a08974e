"""What an ONNX model takes and gives: input/output names, dtypes, shapes, its nodes and the
external data files it names. `model_info` keeps these facts by the file's sha256 in a folder, so
a warm rerun reads them without importing onnx."""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Set, Tuple, Union

from .atomic import write_atomic

Dim = Union[int, str]  # a number, or a symbolic name for a dynamic dimension


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name
    shape: Tuple[Dim, ...]

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def shape_text(self) -> str:
        return "(" + ", ".join(str(d) for d in self.shape) + ")"


@dataclass(frozen=True)
class OpInfo:
    name: str
    op_type: str
    outputs: Tuple[str, ...]


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    sha256: str
    inputs: List[TensorInfo]
    outputs: List[TensorInfo]
    ops: Tuple[OpInfo, ...] = ()  # the graph's nodes, for checking `op_target` before a build
    external_data: Tuple[str, ...] = ()  # the external data files the model names, relative to its folder
    class_names: Optional[Tuple[str, ...]] = None  # from the `names` metadata of an ultralytics export

    def input(self, name: str) -> Optional[TensorInfo]:
        return next((t for t in self.inputs if t.name == name), None)

    @property
    def op_outputs(self) -> FrozenSet[str]:
        return frozenset(name for op in self.ops for name in op.outputs)

    @property
    def op_types(self) -> FrozenSet[str]:
        return frozenset(op.op_type for op in self.ops)


def _tensor_info(value_info) -> TensorInfo:
    from onnx import helper

    tensor_type = value_info.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    dims: List[Dim] = []
    for i, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or f"d{i}")
    return TensorInfo(value_info.name, dtype, tuple(dims))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_model_info(path: Path, sha256: Optional[str] = None) -> ModelInfo:
    """Raises onnx's own errors for a file that is not an ONNX model; callers turn them into SPEC."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_tensor_info(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_tensor_info(v) for v in model.graph.output]
    ops = tuple(OpInfo(node.name, node.op_type, tuple(node.output)) for node in model.graph.node)
    return ModelInfo(Path(path), sha256 or file_sha256(Path(path)), inputs, outputs, ops, external_data_files(model),
                     metadata_class_names({p.key: p.value for p in model.metadata_props}))


MAX_NAMES_TEXT = 1 << 20  # a `names` entry longer than this is not parsed


def metadata_class_names(metadata: Dict[str, str]) -> Optional[Tuple[str, ...]]:
    """Class names by class id from an ONNX model's metadata: ultralytics exports write `names` as a
    Python literal, "{0: 'person', 1: 'bicycle', ...}" (or a list). Parsed as a literal only, never run;
    None when there is no such entry or it is not one."""
    from .detection.labels import class_names_from

    text = metadata.get("names")
    if not isinstance(text, str) or len(text) > MAX_NAMES_TEXT:
        return None
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    names = class_names_from(value)
    return tuple(names) if names is not None else None


def external_data_files(model) -> Tuple[str, ...]:
    """The external data files a loaded ModelProto names (relative to its folder), sorted; subgraphs too."""
    import onnx

    graphs = [model.graph]
    locations: Set[str] = set()
    while graphs:
        graph = graphs.pop()
        tensors = list(graph.initializer)
        for node in graph.node:
            for attribute in node.attribute:
                tensors += [attribute.t] if attribute.HasField("t") else []
                tensors += list(attribute.tensors)
                graphs += ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
        for tensor in tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                locations.update(e.value for e in tensor.external_data if e.key == "location")
    return tuple(sorted(locations))


MODEL_INFO_FORMAT = 2  # bump when ModelInfo's fields change


def model_info(path: Path, folder: Optional[Path]) -> ModelInfo:
    """read_model_info, kept in `folder` by the file's sha256 (None: not kept). A record that cannot be
    read is read from the model again."""
    path = Path(path)
    sha256 = file_sha256(path)
    record = folder / f"{sha256}.json" if folder is not None else None
    if record is not None:
        try:
            return _from_record(json.loads(record.read_text()), path, sha256)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not kept yet, or damaged
    info = read_model_info(path, sha256)
    if record is not None:
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            fields = {k: v for k, v in asdict(info).items() if k not in ("path", "sha256")}
            write_atomic(record, json.dumps({"format": MODEL_INFO_FORMAT, **fields}))
        except OSError:
            pass  # read from the model next time
    return info


def _from_record(record: dict, path: Path, sha256: str) -> ModelInfo:
    if record["format"] != MODEL_INFO_FORMAT:
        raise ValueError(f"format {record['format']}")

    def tensor(t: dict) -> TensorInfo:
        return TensorInfo(t["name"], t["dtype"], tuple(t["shape"]))

    return ModelInfo(path, sha256, [tensor(t) for t in record["inputs"]], [tensor(t) for t in record["outputs"]],
                     tuple(OpInfo(o["name"], o["op_type"], tuple(o["outputs"])) for o in record["ops"]),
                     tuple(record["external_data"]),
                     tuple(record["class_names"]) if record["class_names"] is not None else None)
