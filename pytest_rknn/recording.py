"""Collects every item's record (from pytest-xdist workers too) and, at the end of the session,
writes the baseline, the JSON report and the HTML report, each file atomically, on the controller only.
Then every process that ran items (not the pytest-xdist controller) trims the job folders of its passed
items (jobdir.trim), unless --rknn-keep-outputs.

Nothing here raises at the end of a session: each output is written on its own, and one that cannot
be written is one line in the terminal summary and a failed exit status, never a traceback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from .baseline import BaselineStore
from .items import RECORD_ATTRIBUTE
from .jobdir import trim
from .options import get_option
from .report import board_lines, summary_table
from .report_assets import with_copied_assets
from .report_json import report_document, write_json_report
from .result import describe_exception, json_safe


@dataclass
class OutputSettings:
    baseline: Optional[BaselineStore] = None
    update_baseline: bool = False
    compare_to: Optional[str] = None
    json_path: Optional[Path] = None
    html_path: Optional[Path] = None
    strict_baseline: bool = False  # --rknn-baseline-strict: a missing baseline fails the item


class SessionRecords:
    """A plugin object: registered by pytest_configure, fed by every report that carries a record."""

    def __init__(self, settings: OutputSettings):
        self.settings = settings
        self._by_node: Dict[str, dict] = {}  # the last record of each item (a rerun replaces it)
        self._document: Optional[dict] = None
        self.written: List[str] = []  # lines for the terminal summary
        self.tracebacks: List[str] = []  # of unexpected exceptions at the end of the session
        self.failed = False  # an output could not be written
        self.keep_outputs = False

    @pytest.hookimpl
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.keep_outputs = get_option(session.config, "--rknn-keep-outputs")  # a bad ini value: a usage error now

    @property
    def records(self) -> List[dict]:
        return list(self._by_node.values())

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = getattr(report, RECORD_ATTRIBUTE, None)
        if record is not None:
            self._by_node[report.nodeid] = record

    def attempt(self, failed: str, action: Callable[[], None]) -> bool:
        """Run one end-of-session step; if it raises, one line (`failed`: the reason) and go on."""
        try:
            action()
            return True
        except OSError as exc:
            self.written.append(f"{failed}: {type(exc).__name__}: {exc}")
        except Exception as exc:
            reason, trace = describe_exception(exc)
            self.written.append(f"{failed}: {reason}")
            self.tracebacks.append(trace)
        return False

    def finish(self, session: pytest.Session) -> None:
        worker = hasattr(session.config, "workerinput")
        if not worker:  # in a pytest-xdist worker the controller writes
            self._write_outputs(session)
        # After the reports (they copy the overlays next to them). The pytest-xdist controller trims nothing:
        # each worker trims its own folders (on its own machine, with --tx), and keeps the overlays that
        # the controller copies after the workers ended.
        if not self.keep_outputs and not session.config.pluginmanager.has_plugin("dsession"):
            overlays = not (worker and (self.settings.html_path or self.settings.json_path))
            self.attempt("job folders NOT trimmed", lambda: self._trim_job_folders(overlays))

    def _trim_job_folders(self, overlays: bool) -> None:
        folders = passed_job_folders(self.records)
        freed = sum(trim(folder, overlays) for folder in folders)
        if freed:
            self.written.append(f"removed {freed / 1e6:.1f} MB of inputs and outputs from the job folders of passed "
                                f"items in {folders[0].parent.parent} (--rknn-keep-outputs keeps them)")

    def _write_outputs(self, session: pytest.Session) -> None:
        settings = self.settings
        if settings.update_baseline and not self.attempt(
                "baseline NOT updated", lambda: self._update_baseline(session.exitstatus)):
            self.failed = True
        for what, path, write in (("JSON report", settings.json_path, write_json_report),
                                  ("HTML report", settings.html_path, _write_html_report)):
            if path is None:
                continue
            # The pictures it names are copied next to it first (REPORT-files/), and it names the copies.
            if self.attempt(f"{what} NOT written to {path}",
                            lambda: write(path, with_copied_assets(self.document(), path))):
                self.written.append(f"{what}: {path}")
            else:
                self.failed = True
        if self.failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # CI must not take a lost output for a success

    def _update_baseline(self, exitstatus: int) -> None:
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            self.written.append("baseline NOT updated: the run was interrupted, the recorded one stays")
            return
        store = self.settings.baseline
        if store is None:  # OutputSettings(update_baseline=True) without a baseline folder
            self.written.append("baseline NOT updated: no baseline folder (--rknn-baseline=DIR)")
            self.failed = True
            return
        self.written += [f"baseline {line}" for line in store.update(self.records)]
        self.failed = self.failed or bool(store.not_updated)

    def document(self) -> dict:
        """The report document, built once for the JSON and the HTML report."""
        if self._document is None:
            baseline = self.settings.baseline.directory if self.settings.baseline else None
            self._document = json_safe(report_document(self.records, self.settings.compare_to, baseline))
        return self._document

    def summary_lines(self) -> List[str]:
        """The `rknn summary` table (empty without records)."""
        try:
            return summary_table(self.records) + board_lines(self.records) if self.records else []
        except Exception as exc:
            reason, trace = describe_exception(exc)
            self.tracebacks.append(trace)
            return [f"no summary table: {reason}"]


def passed_job_folders(records: List[dict]) -> List[Path]:
    """The job folders (`SPEC-HASH/VERSION`, `SPEC-HASH/VERSION-board`) of the specs whose items all passed,
    found through the items' logs. A spec with an item that did not pass keeps all its folders: the
    failure's arrays, and those of the other versions and of the simulator to compare them with.
    Reports and comparisons (baseline, --rknn-compare-to) read metrics from the records, never these files."""
    kept = {r["spec"] for r in records if r.get("outcome") != "passed"}
    spec_folders = {Path(r["log"]).parent.parent for r in records if r.get("log") and r.get("outcome") == "passed"}
    return sorted(job for folder in spec_folders if folder.is_dir() and folder.name.rsplit("-", 1)[0] not in kept
                  for job in folder.iterdir() if job.is_dir())


def _write_html_report(path: Path, document: dict) -> None:
    from .report_html import write_html_report  # its charts and images are not needed without --rknn-html

    write_html_report(path, document)
