"""What an ONNX model takes and gives: input/output names, dtypes, shapes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, List, Optional, Tuple, Union

import onnx
from onnx import helper

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

    def input(self, name: str) -> Optional[TensorInfo]:
        return next((t for t in self.inputs if t.name == name), None)

    @property
    def op_outputs(self) -> FrozenSet[str]:
        return frozenset(name for op in self.ops for name in op.outputs)

    @property
    def op_types(self) -> FrozenSet[str]:
        return frozenset(op.op_type for op in self.ops)


def _tensor_info(value_info) -> TensorInfo:
    tensor_type = value_info.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    dims = []
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


def read_model_info(path: Path) -> ModelInfo:
    """Raises onnx's own errors for a file that is not an ONNX model; callers turn them into SPEC."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_tensor_info(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_tensor_info(v) for v in model.graph.output]
    ops = tuple(OpInfo(node.name, node.op_type, tuple(node.output)) for node in model.graph.node)
    return ModelInfo(Path(path), file_sha256(Path(path)), inputs, outputs, ops)
