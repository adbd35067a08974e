"""Where in the model a failing simulator item first diverges, from RKNN-Toolkit2's own per-layer analysis.

After a build, `rknn.accuracy_analysis(inputs, output_dir, target=None)` runs one sample through the
quantised simulator and through the toolkit's float run of the same graph, and writes
`error_analysis.txt` (2.3.2 and 2.5.0 alike; 2.3.2 prints the euclidean errors with 4 decimals, 2.5.0
with 5). After a header, one row per layer of the optimised graph, in execution order:

    [Relu] r2                  0.19386 | 75.77376  0.19386 | 75.77376
    [Conv] c3

`entire` (the first pair: cosine | euclidean) is the layer's output when everything before it ran
quantised too, so errors accumulate; `single` (the second pair) is that layer alone, given the float
run's inputs, so it points at the layer that loses the accuracy. A row without numbers is a layer the
toolkit fused into the next row (a Conv into the Relu after it).

`localise()` runs the analysis on the worst sample of the output the failure message names and adds
what it finds to the result: the table, the first layer whose `single` cosine is below the threshold,
the first whose `entire` cosine is. The threshold is the spec's cosine minimum for that output: a layer that alone
already loses more than the whole output may lose is where the model diverges (0.99, the spec's
default, when the result has no threshold). It never changes the outcome.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..result import RunResult, format_cosine

DEFAULT_THRESHOLD = 0.99  # the spec's own default cosine minimum

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf)"
# The columns are padded to a width, and a wide number touches the next: `100.37954-0.33949 | ...`.
_ROW = re.compile(rf"^\[(?P<op>[^\]]+)\]\s(?P<layer>.*?)(?:(?:\s+|(?=-))(?P<ec>{_NUMBER})\s*\|\s*(?P<ee>{_NUMBER})"
                  rf"\s*(?P<sc>{_NUMBER})\s*\|\s*(?P<se>{_NUMBER}))?\s*$", re.IGNORECASE)


def parse_error_analysis(text: str) -> List[dict]:
    """The rows of an error_analysis.txt, in order: layer (the layer's output tensor), op, and
    entire_cos, entire_euc, single_cos, single_euc (None for a row without numbers, a fused layer)."""
    rows = []
    for line in text.splitlines():
        match = _ROW.match(line.strip())
        if not match or not match.group("layer").strip():
            continue
        numbers = [_float(match.group(k)) for k in ("ec", "ee", "sc", "se")]
        rows.append(dict(layer=match.group("layer").strip(), op=match.group("op"), entire_cos=numbers[0],
                         entire_euc=numbers[1], single_cos=numbers[2], single_euc=numbers[3]))
    return rows


def first_below(rows: List[dict], column: str, threshold: float) -> Optional[dict]:
    """The first row whose `column` cosine is below the threshold, with the layers fused into it (`fused`:
    the rows without numbers just before it). A NaN cosine (a layer all zeros on both sides, say) is
    no evidence either way and is passed over."""
    fused: List[str] = []
    for row in rows:
        value = row[column]
        if value is None:
            fused.append(f"{row['op']} {row['layer']}")
            continue
        if value < threshold:
            return dict(row, fused=fused)
        fused = []
    return None


def worst_output(result: RunResult) -> Tuple[Optional[str], int, float, bool]:
    """The output to analyse, the sample, the threshold, and whether that output fails its cosine: the first
    output, in model order, that fails (non-finite values, then its cosine below its minimum), as the failure
    message names it; else (a detection or max_abs failure) the output with the lowest cosine margin."""
    def threshold_of(m):
        value = result.thresholds.get(f"cosine.{m.name}")
        return DEFAULT_THRESHOLD if value is None else float(value)

    def margin(m):
        return -math.inf if math.isnan(m.worst_cosine) else m.worst_cosine - threshold_of(m)

    measured = [m for m in result.outputs if m.shape_ok]
    for m in measured:
        if m.nonfinite:
            return m.name, m.nonfinite_sample or 0, threshold_of(m), True
        if margin(m) < 0:
            return m.name, m.worst_sample, threshold_of(m), True
    if not measured:
        return None, 0, DEFAULT_THRESHOLD, False
    chosen = min(measured, key=margin)
    return chosen.name, chosen.worst_sample, threshold_of(chosen), False


def localise(result: RunResult, analyse: Callable[[int], Path]) -> None:
    """Run `analyse(sample)` (the toolkit's accuracy_analysis; returns its error_analysis.txt) on the worst
    sample and record what it says in `result.localisation`. When an output fails its cosine (or has NaN/Inf),
    the message gains the first divergence; a failure of another check (detections, max_abs) keeps its message
    and gets the table only. When the analysis fails or times out, the outcome stays as it is and a warning
    says so."""
    output, sample, threshold, cosine_failed = worst_output(result)
    started = time.monotonic()
    record: Dict[str, Any] = dict(output=output, sample=sample, threshold=threshold)
    try:
        path = analyse(sample)
        rows = parse_error_analysis(path.read_text(errors="replace"))
    except Exception as exc:  # an RknnError (TIMEOUT, CRASH, BUILD) or anything else: evidence only
        reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        result.localisation = dict(record, error=reason, seconds=round(time.monotonic() - started, 3))
        result.warnings.append(f"the per-layer accuracy analysis did not finish: {reason}")
        return
    record.update(rows=rows, file=str(path), seconds=round(time.monotonic() - started, 3),
                  first_single=first_below(rows, "single_cos", threshold),
                  first_entire=first_below(rows, "entire_cos", threshold))
    result.localisation = record
    result.timings["localise"] = record["seconds"]
    note = divergence_note(record)
    if note and cosine_failed:
        result.message += f"; {note}"


def divergence_note(record: dict) -> str:
    """`first divergence: r2 (Relu, fused with Conv c2), single cosine 0.193860`, or where the accumulated
    error first drops below the threshold when no layer alone does; "" when neither."""
    threshold = record["threshold"]
    single, entire = record.get("first_single"), record.get("first_entire")
    if single is not None:
        return f"first divergence: {_layer(single)}, single cosine {format_cosine(single['single_cos'], threshold)}"
    if entire is not None:
        return (f"no layer alone has a single cosine below {threshold:g}; the accumulated error first does at "
                f"{_layer(entire)}, entire cosine {format_cosine(entire['entire_cos'], threshold)}")
    return ""


def _layer(row: dict) -> str:
    fused = f", fused with {', '.join(row['fused'])}" if row.get("fused") else ""
    return f"{row['layer']} ({row['op']}{fused})"


def _float(text: Optional[str]) -> Optional[float]:
    return None if text is None else float(text)
