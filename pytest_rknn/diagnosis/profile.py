"""A build's profile: where its layers run and what the toolkit estimates they cost.

From the layer table (layers.py) of the simulator job's build, the ONNX model and the `.rknn` file:
layers on the NPU and on the CPU (each CPU layer with the toolkit's reason and the tensor that
`convert.op_target` takes to move it), the total estimated cycles, the internal and weight memory,
the `.rknn` size and the build time. Cycles and memory are the toolkit's own estimates for the
target, not measurements.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..onnx_model import ModelInfo
from .layers import LayerTable


@dataclass
class CpuLayer:
    op_type: str  # as the layer table names it (a fused layer: ConvRelu)
    node: str  # the ONNX node
    onnx_op_type: Optional[str]  # the node's op type in the ONNX graph (Conv for a ConvRelu)
    tensor: Optional[str]  # the node's first output, the key for convert.op_target; None: not an ONNX node
    reason: Optional[str]  # the toolkit's warning line, when it gave one

    def is_allowed(self, op_types: List[str]) -> bool:
        return self.op_type in op_types or self.onnx_op_type in op_types


@dataclass
class Profile:
    npu_ops: int
    cpu_ops: int
    cycles: Optional[int]  # the sum of every layer's estimated total cycles
    internal_memory: Optional[int]  # bytes
    weight_memory: Optional[int]
    rknn_bytes: Optional[int]
    build_seconds: Optional[float]
    cpu_layers: List[CpuLayer] = field(default_factory=list)

    def metrics(self) -> Dict[str, float]:
        """The numbers that go into baselines and gates (build time does not: it is not reproducible)."""
        values = {"cpu_ops": self.cpu_ops, "cycles": self.cycles, "memory.internal": self.internal_memory,
                  "memory.weight": self.weight_memory, "memory.rknn_file": self.rknn_bytes}
        return {name: value for name, value in values.items() if value is not None}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Profile":
        return cls(**{**values, "cpu_layers": [CpuLayer(**layer) for layer in values["cpu_layers"]]})


def build_profile(layers: Optional[dict], model: ModelInfo, rknn_path: Optional[Path],
                  build_seconds: Optional[float]) -> Optional[Profile]:
    """The profile of a build from its result.json's `layers`; None when the build printed no table."""
    if not layers:
        return None
    table = LayerTable.from_record(layers)
    ops = {op.name: op for op in model.ops if op.name and op.outputs}
    cpu = []
    for layer in table.cpu_layers:
        op = ops.get(layer.node_name)
        cpu.append(CpuLayer(layer.op_type, layer.node_name, op.op_type if op else None, op.outputs[0] if op else None,
                            layer.reason))
    cycles = [layer.cycles_total for layer in table.layers if layer.cycles_total is not None]
    size = rknn_path.stat().st_size if rknn_path is not None and rknn_path.is_file() else None
    return Profile(len(table.npu_layers), len(cpu), sum(cycles) if cycles else None, table.internal_memory,
                   table.weight_memory, size, build_seconds, cpu)
