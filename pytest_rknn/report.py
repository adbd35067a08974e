"""The terminal summary: one table of spec x version x backend."""

from __future__ import annotations

import math
from typing import Dict, List

from .result import RunResult


def summary_row(result: RunResult) -> Dict:
    """A JSON-able row; travels in report.user_properties so pytest-xdist workers deliver it too."""
    return {
        "spec": result.spec,
        "version": result.version,
        "backend": result.backend,
        "outcome": "passed" if result.passed else "failed",
        "class": result.failure_class or "",
        "cosine": {m.name: m.worst_cosine for m in result.outputs},
        "message": result.message,
    }


def _cosine_text(cosines: Dict[str, float]) -> str:
    if not cosines:
        return "-"
    if len(cosines) == 1:
        return _number(next(iter(cosines.values())))
    return "  ".join(f"{name} {_number(value)}" for name, value in cosines.items())


def _number(value: float) -> str:
    if value is None or math.isnan(value):
        return "nan"
    return f"{math.floor(value * 1e6) / 1e6:.6f}"  # floored: 0.9999996 must not show as 1.000000


def summary_table(rows: List[Dict]) -> List[str]:
    header = ["spec", "version", "backend", "worst cosine per output", "outcome", "class"]
    body = [[r["spec"], r["version"], r["backend"], _cosine_text(r["cosine"]), r["outcome"], r["class"] or "-"]
            for r in sorted(rows, key=lambda r: (r["spec"], r["version"], r["backend"]))]
    widths = [max(len(str(row[i])) for row in [header] + body) for i in range(len(header))]
    fmt = lambda row: "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(row) for row in body]
