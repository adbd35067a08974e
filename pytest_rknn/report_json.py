"""The JSON report (`--rknn-json`): one object per item, for scripts and dashboards."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import List, Optional

from .atomic import write_atomic
from .fingerprint import host_versions

FORMAT = "pytest-rknn-report/1"


def report_document(records: List[dict], compare_to: Optional[str], baseline: Optional[Path]) -> dict:
    return {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": host_versions(),
        "compare_to": compare_to,
        "baseline": str(baseline) if baseline else None,
        "items": sorted(records, key=lambda r: (r["spec"], r["version"], r["backend"])),
    }


def write_json_report(path: Path, document: dict) -> None:
    write_atomic(path, json.dumps(document, indent=2, allow_nan=False) + "\n")
