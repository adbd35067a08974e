"""The HTML report (`--rknn-html`): placeholder until the real one lands."""

from __future__ import annotations

import html
import json
from pathlib import Path

from .atomic import write_atomic


def write_html_report(path: Path, document: dict) -> None:
    write_atomic(path, "<!doctype html><pre>" + html.escape(json.dumps(document, indent=2)) + "</pre>")
