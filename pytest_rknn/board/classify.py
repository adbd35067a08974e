"""What a board job's outcome means: the runner's result.json and the runtime's log lines
turned into a result or one classified RknnError. The runtime's own line decides; what the
versions say is only added to it."""

from __future__ import annotations

from typing import List, Optional, Tuple

from ..errors import BUILD, CRASH, ENV, TIMEOUT, RknnError
from ..logs import error_lines, exception_line, log_tail, signal_name, without_timestamp
from .preflight import BoardInfo, runtime_is_older

# What rknn-toolkit-lite2 or librknnrt says when the board cannot run any model (a part of its
# line), and the fix. The lines are the real runtime's (tests/test_board_classify.py).
BOARD_PROBLEMS = (
    ("failed to open rknpu module",
     "the NPU driver is not loaded or cannot be opened: load the rknpu driver (`dmesg | grep -i rknpu`) or use "
     "a board image that has it, and run as a user who may open /dev/dri/renderD129"),
    ("Can not find dynamic library on",
     "install librknnrt.so to /usr/lib from Rockchip's rknpu2 runtime (rknpu2/runtime/Linux/librknn_api/aarch64)"),
    ("Please specify the target in init_runtime!",
     "rknn-toolkit-lite2 found no Rockchip SoC in /proc/device-tree/compatible: run on the board itself, not in "
     "a chroot or container without the board's /proc/device-tree"),
    ("some necessary files are missing in the container",
     "start the container with the NPU device and the device tree: -v /dev/dri/renderD129:/dev/dri/renderD129 "
     "-v /proc/device-tree/compatible:/proc/device-tree/compatible, or run on the board itself"),
    ("Unsupported run platform",
     "rknn-toolkit-lite2 runs models only on the board's own Linux (aarch64 or armv7l), with init_runtime() "
     "given no target"),
)
# Lines the runtime logs when a model is newer than it can run.
_TOO_NEW = ("Invalid RKNN model version", "not match with rknn runtime version")


def classify(where: str, info: BoardInfo, result: dict, lines: List[str], toolkit_version: str) -> dict:
    """The runner's result.json as the item's outcome: the result when it ran, else an RknnError."""
    status = result["status"]
    tail = log_tail(lines)
    if status == "ok":
        return _warn_if_older(where, info, result, lines, toolkit_version)
    if status == "SHA256":
        raise RknnError(ENV, f"{where}: the uploaded .rknn has sha256 {result['found'][:12]}..., not the "
                             f"built one; the copy was damaged on the way")
    if status == "TIMEOUT":
        raise RknnError(TIMEOUT, f"{where}: no result after {result['seconds']:g} s, during {result['step']}; "
                                 f"runner process group killed (raise --rknn-board-timeout)", tail)
    hint = _older_hint(info, toolkit_version)
    problem = board_problem(lines)
    if problem:
        said, fix = problem
        raise RknnError(ENV, f"{where}: {_what_failed(result)}: {said} ({fix}){hint}", tail)
    if status == "CRASH":
        errors = error_lines(lines)
        detail = f": {errors[0]}" if errors else " (the runtime logged no error line; see the log tail)"
        raise RknnError(CRASH, f"{where}: runner killed by {signal_name(result['signal'])} during "
                               f"{result['step']}{detail}{hint}", tail)
    too_new = [line for line in error_lines(lines) if any(mark in line for mark in _TOO_NEW)]
    if too_new:
        runtime = f"librknnrt {info.librknnrt}" if info.librknnrt else "the board's librknnrt"
        raise RknnError(ENV, f"{where}: {runtime} is older than rknn-toolkit2 {toolkit_version} that built the "
                             f"model; {_what_failed(result)}: {too_new[0]} (update the board runtime or build "
                             f"with an older toolkit)", tail)
    if status == "RUNTIME":
        raise RknnError(BUILD, f"{where}: {_what_failed(result)}: {_runtime_said(lines)}{hint}", tail)
    # The runner exited without a result: a Python exception, e.g. rknnlite failing to import.
    reason = (exception_line(lines) or next((l.strip() for l in reversed(lines) if "Error" in l), None)
              or f"exit status {result.get('returncode')}")
    failure_class = ENV if result.get("step") in ("start", "sha256", "import") else BUILD
    raise RknnError(failure_class, f"{where}: the runner failed during {result.get('step')}: {reason}{hint}", tail)


def board_problem(lines: List[str]) -> Optional[Tuple[str, str]]:
    """(the runtime's line, the fix) when the log says the board cannot run any model."""
    for mark, fix in BOARD_PROBLEMS:
        said = next((line for line in lines if mark in line), None)
        if said:
            return without_timestamp(said), fix
    return None


def _what_failed(result: dict) -> str:
    if result["status"] == "RUNTIME":
        return f"RKNNLite.{result['step']}() returned {result['returncode']}"
    if result["status"] == "CRASH":
        return f"runner killed by {signal_name(result['signal'])} during {result['step']}"
    return f"the runner failed during {result.get('step')}"


def _runtime_said(lines: List[str]) -> str:
    """The runtime's error lines and the exception that ended its traceback."""
    said = [line for line in error_lines(lines) if "Traceback (most recent call last)" not in line]
    last = exception_line(lines)
    if last and last not in said:
        said.append(last)
    return "; ".join(said) if said else "RKNNLite logged no error line, see the log tail"


def _older_hint(info: BoardInfo, toolkit_version: str) -> str:
    if not runtime_is_older(info, toolkit_version):
        return ""
    return (f"; librknnrt {info.librknnrt} on the board is older than rknn-toolkit2 {toolkit_version} "
            f"that built the model")


def _warn_if_older(where: str, info: BoardInfo, result: dict, lines: List[str], toolkit_version: str) -> dict:
    if runtime_is_older(info, toolkit_version):
        # A 2.x runtime runs newer models with only a warning; results may still differ.
        said = next((l.strip() for l in lines if "not match with rknn runtime version" in l), "")
        result["warnings"] = [f"{where}: librknnrt {info.librknnrt} is older than rknn-toolkit2 "
                              f"{toolkit_version} that built the model" + (f" ({said})" if said else "")]
    return result
