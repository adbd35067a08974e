"""What a board job's outcome means: the runner's result.json and the runtime's log lines
turned into a result or one classified RknnError."""

from __future__ import annotations

from typing import List

from ..errors import BUILD, CRASH, ENV, TIMEOUT, RknnError
from ..logs import error_lines, log_tail, signal_name
from .preflight import BoardInfo, runtime_is_older

# Lines the runtime logs when a model is newer than it can run.
_TOO_NEW = ("Invalid RKNN model version", "not match with rknn runtime version")


def classify(where: str, info: BoardInfo, result: dict, lines: List[str], toolkit_version: str) -> dict:
    """The runner's result.json as the item's outcome: the result when it ran, else an RknnError."""
    status = result["status"]
    errors = error_lines(lines)
    tail = log_tail(lines)
    if status == "ok":
        if runtime_is_older(info, toolkit_version):
            # A 2.x runtime runs newer models with only a warning; results may still differ.
            said = next((l.strip() for l in lines if "not match with rknn runtime version" in l), "")
            result["warnings"] = [f"{where}: librknnrt {info.librknnrt} is older than rknn-toolkit2 "
                                  f"{toolkit_version} that built the model" + (f" ({said})" if said else "")]
        return result
    if status == "SHA256":
        raise RknnError(ENV, f"{where}: the uploaded .rknn has sha256 {result['found'][:12]}..., not the "
                             f"built one; the copy was damaged on the way")
    if status == "TIMEOUT":
        raise RknnError(TIMEOUT, f"{where}: no result after {result['seconds']:g} s, during {result['step']}; "
                                 f"runner process group killed (raise --rknn-board-timeout)", tail)
    if status == "CRASH":
        detail = f": {errors[0]}" if errors else " (the runtime logged no error line; see the log tail)"
        raise RknnError(CRASH, f"{where}: runner killed by {signal_name(result['signal'])} during "
                               f"{result['step']}{detail}", tail)
    too_new = [line for line in errors if any(mark in line for mark in _TOO_NEW)]
    if status == "RUNTIME" and (too_new or runtime_is_older(info, toolkit_version)):
        detail = f": {too_new[0]}" if too_new else ""
        raise RknnError(ENV, f"{where}: librknnrt {info.librknnrt} is older than rknn-toolkit2 "
                             f"{toolkit_version} that built the model; RKNNLite.{result['step']}() returned "
                             f"{result['returncode']}{detail} (update the board runtime or build with an older "
                             f"toolkit)", tail)
    if status == "RUNTIME":
        detail = "; ".join(errors) if errors else "RKNNLite logged no error line, see the log tail"
        raise RknnError(BUILD, f"{where}: RKNNLite.{result['step']}() returned {result['returncode']}: "
                               f"{detail}", tail)
    # The runner exited without a result: a Python exception, e.g. rknnlite failing to import.
    reason = next((l.strip() for l in reversed(lines) if "Error" in l), f"exit status {result.get('returncode')}")
    failure_class = ENV if result.get("step") in ("start", "sha256", "import") else BUILD
    raise RknnError(failure_class, f"{where}: the runner failed during {result.get('step')}: {reason}", tail)
