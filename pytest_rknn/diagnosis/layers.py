"""The layer table a verbose RKNN-Toolkit2 build prints, as records.

A verbose build (`RKNN(verbose=True)`) logs, for every toolkit version seen here (2.3.2, 2.5.0), a
`Network Layer Information Table` (ID, OpType, DataType, Target NPU/CPU, InputShape, OutputShape,
Cycles(DDR/NPU/Total), RW(KB), FullName `OpType:ONNX node name`), then `Total Internal Memory Size`
and `Total Weight Memory Size`, and warning lines such as
`W RKNN: [..] AveragePool count_include_pad=0, fallback to cpu` that say why a layer left the NPU.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, List, Optional

_PREFIX = re.compile(r"^[DIWE] RKNN: \[[0-9:.]+\] ?")
_WARNING = re.compile(r"^W RKNN: \[[0-9:.]+\] (?P<text>.*)$")
_MEMORY = re.compile(r"Total (?P<what>Internal|Weight) Memory Size: (?P<value>[0-9.]+)(?P<unit>[KMG]?B)")
_UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}
TABLE_TITLE = "Network Layer Information Table"
PSEUDO_OPS = ("InputOperator", "OutputOperator")  # the table's own rows for the graph's inputs and outputs


@dataclass
class Layer:
    id: int
    op_type: str
    dtype: str
    target: str  # NPU or CPU
    input_shapes: str
    output_shape: str
    cycles_ddr: Optional[int]
    cycles_npu: Optional[int]
    cycles_total: Optional[int]
    rw_kb: Optional[float]
    full_name: str  # `OpType:node`: the ONNX node's name (of the first node, for a fused layer)
    reason: Optional[str] = None  # the toolkit's warning about this layer, for a CPU layer

    @property
    def node_name(self) -> str:
        """The ONNX node: the part of FullName after the first colon. Not the tensor `op_target`
        takes (that is the node's output; see diagnosis/profile.py)."""
        return self.full_name.split(":", 1)[1] if ":" in self.full_name else self.full_name

    @property
    def is_operator(self) -> bool:
        return self.op_type not in PSEUDO_OPS


@dataclass
class LayerTable:
    layers: List[Layer] = field(default_factory=list)
    internal_memory: Optional[int] = None  # bytes
    weight_memory: Optional[int] = None
    warnings: List[str] = field(default_factory=list)  # every W RKNN line of the build

    @property
    def cpu_layers(self) -> List[Layer]:
        return [layer for layer in self.layers if layer.is_operator and layer.target == "CPU"]

    @property
    def npu_layers(self) -> List[Layer]:
        return [layer for layer in self.layers if layer.is_operator and layer.target == "NPU"]

    def to_record(self) -> dict:
        """Plain JSON types; the warnings only as far as they are a CPU layer's reason."""
        return {"layers": [asdict(layer) for layer in self.layers], "internal_memory": self.internal_memory,
                "weight_memory": self.weight_memory}

    @classmethod
    def from_record(cls, record: dict) -> "LayerTable":
        return cls([Layer(**layer) for layer in record["layers"]], record["internal_memory"], record["weight_memory"])


def parse_layer_table(lines: Iterable[str]) -> Optional[LayerTable]:
    """The last layer table in a build log, with the memory totals and the warnings; None when the
    log has no table (a build that was not verbose, or did not get that far)."""
    lines = list(lines)
    table: Optional[LayerTable] = None
    rows: Optional[List[Layer]] = None
    warnings = []
    for line in lines:
        warning = _WARNING.match(line)
        if warning:
            warnings.append(warning.group("text").strip())
        text = _PREFIX.sub("", line).strip()
        if TABLE_TITLE in text:
            table, rows = LayerTable(), []
            continue
        if rows is None:
            memory = _MEMORY.search(text)
            if memory and table is not None:
                size = int(float(memory.group("value")) * _UNITS[memory.group("unit")])
                setattr(table, "internal_memory" if memory.group("what") == "Internal" else "weight_memory", size)
            continue
        if text.startswith("ID ") or set(text) <= {"-", "+"}:
            if set(text) <= {"-", "+"} and rows and table is not None:  # the rule under the last row
                table.layers, rows = rows, None
            continue
        layer = _layer(text)
        if layer is not None:
            rows.append(layer)
    if table is None:
        return None
    if rows:  # a table cut off by the end of the log
        table.layers = rows
    table.warnings = warnings
    for layer in table.cpu_layers:
        layer.reason = _reason(layer, warnings)
    return table


def _layer(text: str) -> Optional[Layer]:
    parts = text.split()
    if len(parts) < 9 or not parts[0].isdigit():
        return None
    ddr, npu, total = [_int(c) for c in parts[6].split("/")] if parts[6].count("/") == 2 else [None, None, None]
    return Layer(int(parts[0]), parts[1], parts[2], parts[3], parts[4], parts[5], ddr, npu, total, _float(parts[7]),
                 " ".join(parts[8:]))


def _reason(layer: Layer, warnings: List[str]) -> Optional[str]:
    """The warning that names this layer's op type and node, else one that names its op type and the
    CPU (the toolkit's fallback lines name the op type only)."""
    def names_node(warning: str) -> bool:
        return re.search(rf"(?<![\w./]){re.escape(layer.node_name)}(?![\w./])", warning) is not None

    typed = [w for w in warnings if layer.op_type in w]
    for found in ([w for w in typed if names_node(w)], [w for w in typed if "cpu" in w.lower()]):
        if found:
            return found[0]
    return None


def _int(text: str) -> Optional[int]:
    return int(text) if text.isdigit() else None


def _float(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return None
