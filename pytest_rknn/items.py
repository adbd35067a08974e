"""`*.rknn.yaml` files as pytest tests: one item per (spec, toolkit version, backend)."""

from __future__ import annotations

import warnings
from typing import Optional

import pytest

from .errors import RknnError, RknnWarning
from .result import RunResult
from .report import junit_properties
from .runner import RknnRunner
from .spec import Spec, load_spec, spec_name


class RknnFailure(Exception):
    """Raised by an item whose result failed; rendered without a traceback."""

    def __init__(self, result: RunResult):
        super().__init__(result.message)
        self.result = result


RECORD_ATTRIBUTE = "rknn_record"  # on items and their call reports: RunResult.to_record() and the node id


def record_result(item: pytest.Item, result: RunResult) -> None:
    """Keep the result's record for the reports and put the metrics into the JUnit XML."""
    setattr(item, RECORD_ATTRIBUTE, {**result.to_record(), "nodeid": item.nodeid})
    item.user_properties.extend(junit_properties(result))


def failure_text(result: RunResult) -> str:
    more = f" (and {len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
    lines = [f"[{result.failure_class}] {result.spec}[{result.version}-{result.backend}]: {result.message}{more}"]
    lines += [f"  {line}" for line in result.failures[1:]]
    if result.log_path:
        lines.append(f"  log: {result.log_path}")
    return "\n".join(lines)


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
        self.add_marker(pytest.mark.rknn)

    def runtest(self):
        if self.spec_error is not None:
            self.result = RunResult(spec=spec_name(self.path), version=self.version, backend=self.backend,
                                    failure_class=self.spec_error.failure_class, message=self.spec_error.message,
                                    spec_path=self.path)
        else:
            runner: RknnRunner = self.config.stash[RUNNER_KEY]
            self.result = runner.run(self.spec, self.version, self.backend)
        record_result(self, self.result)
        for message in self.result.warnings:
            warnings.warn(RknnWarning(message))
        if self.result.log_tail:
            self.add_report_section("call", "rknn log tail", self.result.log_tail)
        if not self.result.passed:
            raise RknnFailure(self.result)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, RknnFailure):
            return failure_text(excinfo.value.result)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, self.name


RUNNER_KEY = pytest.StashKey[RknnRunner]()
