"""A finished job's log: its layer table kept, its debug lines dropped unless they were asked for.

The worker always builds with RKNN(verbose=True), because only a verbose build prints the layer
table (where each layer runs, its estimated cycles, the memory totals); benchmarks/verbose_build.py
measures what that costs (nothing measurable). The table goes into result.json as `layers`; the
toolkit's `D` (debug) lines stay in log.txt only with --rknn-toolkit-verbose, so that the log a
person reads, and the log tail in a failure message, are what a quiet build would have printed.
So do the ONNX files a verbose build writes into its current folder (the job folder) after its
graph passes, `check0_base_optimize.onnx`, `check2_correct_ops.onnx`, `check3_fuse_ops.onnx`:
each about the size of the model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from ..atomic import write_atomic
from ..diagnosis.layers import parse_layer_table
from ..logs import clean_log_lines

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


DEBUG_MODELS = "check[0-9]*_*.onnx"


def settle(job_dir: Path) -> Optional[dict]:
    """The layer table of the job's log as a record (None without one); the debug lines and models
    removed when job.json did not ask for a verbose log."""
    log = job_dir / "log.txt"
    try:
        text = log.read_text(errors="replace")
        verbose = bool(json.loads((job_dir / "job.json").read_text()).get("verbose"))
    except (OSError, ValueError):
        return None
    table = parse_layer_table(clean_log_lines(text))
    if not verbose:
        write_atomic(log, without_debug_lines(text))
        for model in job_dir.glob(DEBUG_MODELS):
            model.unlink(missing_ok=True)
    return table.to_record() if table is not None else None


def without_debug_lines(text: str) -> str:
    """`D ...` lines out (the toolkit's and librknnc's debug level), everything else as it was."""
    kept = [line for line in text.splitlines(keepends=True) if not _ANSI.sub("", line).startswith("D ")]
    return "".join(kept)
