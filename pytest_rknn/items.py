"""`*.rknn.yaml` files as pytest tests: one item per (spec, toolkit version, backend).

Every rknn item ends with a record for the reports, whatever happened to it: spec items and the
tests that use the rknn_result fixture alike, also when they fail or skip before `call`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from .errors import RknnError, RknnWarning
from .result import TRACEBACK_SECTION, RunResult
from .report import junit_properties
from .runner import RknnRunner, spec_label
from .spec import Spec, load_spec, spec_name


class RknnFailure(Exception):
    """Raised by an item whose result failed; rendered without a traceback."""

    def __init__(self, result: RunResult):
        super().__init__(result.message)
        self.result = result


RECORD_ATTRIBUTE = "rknn_record"  # on items and on the report that ends them: RunResult.to_record() and the node id


def record_result(item: pytest.Item, result: RunResult) -> RunResult:
    """Keep the result's record for the reports and put the metrics into the JUnit XML. Returns the
    result recorded: an INTERNAL one when this one cannot be turned into a record (a bug of ours)."""
    try:
        record, properties = _record_of(item, result)
    except Exception as exc:
        result = RunResult(spec=result.spec, version=result.version, backend=result.backend,
                           spec_path=result.spec_path)
        result.fail_with(exc)
        record, properties = _record_of(item, result)
    setattr(item, RECORD_ATTRIBUTE, record)
    item.user_properties.extend(properties)
    return result


def _record_of(item: pytest.Item, result: RunResult) -> Tuple[dict, List[Tuple[str, str]]]:
    return {**result.to_record(), "nodeid": item.nodeid}, junit_properties(result)


def add_sections(item: pytest.Item, result: RunResult, when: str) -> None:
    """The log tail and, for an INTERNAL result, the traceback: report sections, not the failure line."""
    if result.log_tail:
        item.add_report_section(when, "rknn log tail", result.log_tail)
    if result.traceback:
        item.add_report_section(when, TRACEBACK_SECTION, result.traceback)


def failure_text(result: RunResult) -> str:
    more = f" (and {len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
    lines = [f"[{result.failure_class}] {result.spec}[{result.version}-{result.backend}]: {result.message}{more}"]
    lines += [f"  {line}" for line in result.failures[1:]]
    lines += [f"  hint: {hint}" for hint in result.hints]
    if result.log_path:
        lines.append(f"  log: {result.log_path}")
    if result.repro:
        lines.append(f"  repro: {result.repro}")
    return "\n".join(lines)


def attach_record(item: pytest.Item, call: pytest.CallInfo, report: pytest.TestReport) -> None:
    """Give the report that ends an rknn item (its call, or its setup when that did not pass) the
    item's record; an item that has none gets one made from the report. The record's outcome is
    pytest's (a test may fail after a passing result, or expect a failing one); its class is ours."""
    if not is_rknn_item(item) or not (call.when == "call" or (call.when == "setup" and not report.passed)):
        return
    record = getattr(item, RECORD_ATTRIBUTE, None)
    if record is None:
        result = _item_result(item)
        if call.excinfo is not None and isinstance(call.excinfo.value, Exception) and not report.skipped:
            result.fail_with(call.excinfo.value)
        record_result(item, result)
        record = getattr(item, RECORD_ATTRIBUTE)
    if report.outcome != record["outcome"] and not hasattr(report, "wasxfail"):
        # e.g. a test's own assertion about a passing result; its class stays the result's
        record = {**record, "outcome": report.outcome}
        if not report.passed:
            record["message"] = _reason(report)
    setattr(report, RECORD_ATTRIBUTE, record)


def is_rknn_item(item: pytest.Item) -> bool:
    """A spec item, or a test run once per version and backend through the rknn_result fixture."""
    return isinstance(item, RknnItem) or "rknn_result" in getattr(getattr(item, "callspec", None), "params", {})


def _item_result(item: pytest.Item) -> RunResult:
    """An empty result that names the item's spec, version and backend."""
    if isinstance(item, RknnItem):
        name = item.spec.name if item.spec is not None else spec_name(item.path)
        return RunResult(spec=name, version=item.version, backend=item.backend, spec_path=item.path)
    version, backend = getattr(item, "callspec").params["rknn_result"]  # a parametrised test: is_rknn_item
    marker = item.get_closest_marker("rknn_spec")
    spec = marker.args[0] if marker is not None and marker.args else None
    path = Path(item.path).parent / spec if isinstance(spec, (str, Path)) else None
    return RunResult(spec=spec_label(path or spec), version=version, backend=backend, spec_path=path)


def _reason(report: pytest.TestReport) -> str:
    """The one line pytest gives for a report that did not pass."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (file, line, reason)
        return str(longrepr[2])
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message
    lines = str(longrepr).strip().splitlines()
    return lines[0] if lines else report.outcome


class RknnSpecFile(pytest.File):
    def collect(self):
        runner: RknnRunner = self.config.stash[RUNNER_KEY]
        spec: Optional[Spec] = None
        error: Optional[RknnError] = None
        try:
            spec = load_spec(self.path)
        except RknnError as exc:
            error = exc  # reported by every item of this file, so the rest of the session still runs
        name = spec.name if spec else spec_name(self.path)
        for version in runner.versions:
            for backend in runner.backends:
                yield RknnItem.from_parent(self, name=f"{name}[{version}-{backend}]", spec=spec, spec_error=error,
                                           version=version, backend=backend)


class RknnItem(pytest.Item):
    def __init__(self, *, spec, spec_error, version, backend, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.spec_error = spec_error
        self.version = version
        self.backend = backend
        self.result: Optional[RunResult] = None
        # Plugins that assume every item is a test function read this (labgrid's does): an item uses no fixtures.
        self.fixturenames: List[str] = []
        self.add_marker(pytest.mark.rknn)

    def runtest(self):
        self.result = record_result(self, self._run())
        for message in self.result.warnings:
            warnings.warn(RknnWarning(message))
        add_sections(self, self.result, "call")
        if not self.result.passed:
            raise RknnFailure(self.result)

    def _run(self) -> RunResult:
        """The item's result; never raises (see RknnRunner.run)."""
        if self.spec_error is None:
            return self.config.stash[RUNNER_KEY].run(self.spec, self.version, self.backend)
        result = _item_result(self)
        result.fail_with(self.spec_error)
        return result

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, RknnFailure):
            return failure_text(excinfo.value.result)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, self.name


RUNNER_KEY = pytest.StashKey[RknnRunner]()
