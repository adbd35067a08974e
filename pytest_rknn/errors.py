"""Failure classes and the one exception type that carries them."""

from __future__ import annotations

from typing import Optional

# Every outcome that is not a pass belongs to exactly one of these.
SPEC = "SPEC"  # the user's spec or input is wrong
ENV = "ENV"  # toolkit environment missing or broken, board unreachable
BUILD = "BUILD"  # the toolkit refused the model (a call returned -1)
CRASH = "CRASH"  # the worker died from a signal
TIMEOUT = "TIMEOUT"  # the worker ran past its time limit
ACCURACY = "ACCURACY"  # a metric is out of tolerance
PLACEMENT = "PLACEMENT"  # layers run on the CPU that the spec wants on the NPU (checks.placement, gate.cpu_ops)
PERFORMANCE = "PERFORMANCE"  # slower or larger than allowed: board latency, the toolkit's cycle and memory estimates
# Not a verdict on the model: an unexpected exception in pytest-rknn itself (a bug: please report
# it) or in code it called (a hook implementation of yours). Its traceback goes to a report section.
INTERNAL = "INTERNAL"

FAILURE_CLASSES = (SPEC, ENV, BUILD, CRASH, TIMEOUT, ACCURACY, PLACEMENT, PERFORMANCE, INTERNAL)


class RknnError(Exception):
    """A failure the user can act on: a class, one clear message, an optional log tail."""

    def __init__(self, failure_class: str, message: str, log_tail: Optional[str] = None):
        assert failure_class in FAILURE_CLASSES, failure_class
        super().__init__(message)
        self.failure_class = failure_class
        self.message = message
        self.log_tail = log_tail

    def __str__(self) -> str:
        return f"[{self.failure_class}] {self.message}"


class SpecError(RknnError):
    """The spec is wrong: names the file and field, the problem and the fix."""

    def __init__(self, path, field: str, problem: str, fix: str = ""):
        where = f"{path}: {field}" if field else f"{path}"
        message = f"{where}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(SPEC, message)
        self.path = path
        self.field = field


class RknnWarning(UserWarning):
    """Something about a run that passed is worth knowing (an old board runtime, no baseline)."""
