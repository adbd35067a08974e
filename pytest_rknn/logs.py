"""Reading toolkit and runtime logs: colour codes and progress bars out, error lines and
the last step mark found. The same for the simulator worker and the board runner."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import List, Optional

STEP_MARK = "[pytest-rknn] step:"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ERROR_LINE = re.compile(r"^E\s")
_GLUED = re.compile(r"(?<=it/s\])(?=[DIWE] )")
_PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+ \[")
_NOISE = re.compile(r"^E\s+(rknn-toolkit2 version:|\w+: Traceback)")
_TIMESTAMP = re.compile(r"\[\d\d:\d\d:\d\d\.\d+\]\s*")


def clean_log_lines(text: str) -> List[str]:
    """Log lines without colour codes, blank lines and progress bars. The toolkit glues
    log lines onto the end of a finished bar, with no newline."""
    text = _GLUED.sub("\n", _ANSI.sub("", text))
    lines = []
    for line in text.split("\n"):
        states = [state for state in line.split("\r") if state.strip()]
        if states and not _PROGRESS_BAR.search(states[-1]):
            lines.append(states[-1])
    return lines


def read_log(job_dir: Path) -> List[str]:
    try:
        return clean_log_lines((job_dir / "log.txt").read_text(errors="replace"))
    except OSError:
        return []


def error_lines(lines: List[str], limit: int = 5) -> List[str]:
    """The toolkit's own error lines (`E RKNN: ...`, `E build: ...`), without timestamps
    and without the version banner the toolkit logs as an error."""
    found = []
    for line in lines:
        if _ERROR_LINE.match(line) and not _NOISE.match(line):
            text = _TIMESTAMP.sub("", line.strip())
            if text not in found:
                found.append(text)
    return found[:limit]


def last_step(lines: List[str]) -> str:
    steps = [line.split(STEP_MARK, 1)[1].strip() for line in lines if STEP_MARK in line]
    return steps[-1] if steps else "start"


def log_tail(lines: List[str], count: int = 25) -> str:
    return "\n".join(lines[-count:])


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exception_line(lines: List[str]) -> Optional[str]:
    """The last line of the last Python traceback in the log: `Exception: Can not find dynamic
    library on RK3588!`, `RuntimeError`. rknn-toolkit-lite2 logs tracebacks it caught as `E Traceback
    (most recent call last):`, then the indented frames, then the exception; None without one."""
    starts = [i for i, line in enumerate(lines) if "Traceback (most recent call last):" in line]
    if not starts:
        return None
    for line in lines[starts[-1] + 1:]:
        if line.strip() and not line[:1].isspace():
            return line.strip()
    return None


def without_timestamp(line: str) -> str:
    """`E RKNN: [10:11:12.121] Invalid ...` as `E RKNN: Invalid ...`, stripped."""
    return _TIMESTAMP.sub("", line.strip())
