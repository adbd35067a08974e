"""Collects every item's record (from pytest-xdist workers too) and, at the end of the session,
writes the baseline, the JSON report and the HTML report, each file atomically, on the controller only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

from .baseline import BaselineStore
from .items import RECORD_ATTRIBUTE
from .report_html import write_html_report
from .report_json import report_document, write_json_report
from .result import json_safe


@dataclass
class OutputSettings:
    baseline: Optional[BaselineStore] = None
    update_baseline: bool = False
    compare_to: Optional[str] = None
    json_path: Optional[Path] = None
    html_path: Optional[Path] = None


class SessionRecords:
    """A plugin object: registered by pytest_configure, fed by every call report."""

    def __init__(self, settings: OutputSettings):
        self.settings = settings
        self.records: List[dict] = []
        self.written: List[str] = []  # lines for the terminal summary

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = getattr(report, RECORD_ATTRIBUTE, None)
        if report.when == "call" and record is not None:
            self.records.append(record)

    def finish(self, config: pytest.Config, exitstatus: int) -> None:
        if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller writes
            return
        settings = self.settings
        if settings.update_baseline:
            if exitstatus == pytest.ExitCode.INTERRUPTED:
                self.written.append("baseline NOT updated: the run was interrupted, the recorded one stays")
            else:
                self.written += [f"baseline {line}" for line in settings.baseline.update(self.records)]
        document = self.document()
        if settings.json_path:
            write_json_report(settings.json_path, document)
            self.written.append(f"JSON report: {settings.json_path}")
        if settings.html_path:
            write_html_report(settings.html_path, document)
            self.written.append(f"HTML report: {settings.html_path}")

    def document(self) -> dict:
        baseline = self.settings.baseline.directory if self.settings.baseline else None
        return json_safe(report_document(self.records, self.settings.compare_to, baseline))
