"""Under pytest-xdist, every backend of one (spec, version) runs in one worker.

The board item must run the very .rknn file the simulator item built and reported. A second
build in another worker would give other bytes (the toolkit's export is not reproducible)
and double the work. So a plain `-n N` (distribution mode "load") gets a scheduler that hands
out items like "load" does, except that the items of one (spec, version) travel together.
(xdist's own "loadgroup" cannot do it here: it renames node ids in a way pytest 9.2 ignores.)
"""

from __future__ import annotations

import re

from .runner import BOARD, SIM

BACKEND_SUFFIX = re.compile(rf"^(?P<item>.*\[.+)-(?:{SIM}|{BOARD})\]$")  # spec[2.5.0-board], test_x[2.5.0-sim]


def scope_of(nodeid: str) -> str:
    """`specs/cnn.rknn.yaml::cnn[2.5.0-board]` -> `specs/cnn.rknn.yaml::cnn[2.5.0`; other tests
    are a scope of their own."""
    found = BACKEND_SUFFIX.match(nodeid)
    return found.group("item") if found else nodeid


def make_scheduler(config, log):
    """Our scheduler for "load", else None (xdist's own)."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SpecVersionScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return SpecVersionScheduling(config, log)
