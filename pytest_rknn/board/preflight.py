"""What a board is: versions and SoC from the runner's preflight, and the checks on them."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

from ..errors import ENV, RknnError


@dataclass
class BoardInfo:
    address: str
    python: Optional[str] = None
    numpy: Optional[str] = None
    rknn_toolkit_lite2: Optional[str] = None
    librknnrt: Optional[str] = None  # e.g. "2.3.0 (c949ad889d@2024-11-07T11:35:33)"
    driver: Optional[str] = None
    soc: Optional[str] = None  # e.g. "rk3588", from the device tree
    compatible: List[str] = field(default_factory=list)
    model: Optional[str] = None

    def fingerprint(self) -> dict:
        return asdict(self)


def parse_preflight(address: str, stdout: str) -> BoardInfo:
    """The runner prints one JSON line; anything it lists under `problems` is ENV."""
    line = next((l for l in reversed(stdout.splitlines()) if l.startswith("{")), None)
    if line is None:
        raise RknnError(ENV, f"board {address}: the preflight printed no result: {stdout.strip()[-300:]!r}")
    data = json.loads(line)
    problems = data.pop("problems", [])
    if problems:
        raise RknnError(ENV, f"board {address}: {'; '.join(problems)} (check --rknn-board-python and install "
                             f"numpy and rknn-toolkit-lite2 there)")
    known = {k: v for k, v in data.items() if k in BoardInfo.__dataclass_fields__}
    return BoardInfo(address=address, **known)


def version_tuple(text: Optional[str]) -> Optional[Tuple[int, ...]]:
    found = re.match(r"\s*(\d+(?:\.\d+)*)", text or "")
    return tuple(int(p) for p in found.group(1).split(".")) if found else None


def check_target(info: BoardInfo, target: str) -> None:
    """A board whose SoC is known and differs from the spec's target cannot run the model."""
    if info.soc and info.soc.lower() != target.lower():
        raise RknnError(ENV, f"board {info.address} is an {info.soc} ({info.model or 'device tree: ' + ', '.join(info.compatible)}), "
                             f"the spec targets {target}; use a matching board or set `target: {info.soc}`")


def runtime_is_older(info: BoardInfo, toolkit_version: Optional[str]) -> bool:
    runtime, toolkit = version_tuple(info.librknnrt), version_tuple(toolkit_version)
    return bool(runtime and toolkit and runtime < toolkit)
