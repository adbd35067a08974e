"""Boards from a labgrid place, for the session: the options' request, the place taken in the controller
(released when pytest ends, whatever happens) and handed to pytest-xdist workers as it is."""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable, Optional

import pytest

from .board.connection import parse_board_option
from .board.labgrid_place import DEFAULT_COORDINATOR, HeldPlace, PlaceRequest, take_place
from .errors import RknnError
from .options import OPTIONS, get_option

LABGRID_KEY = pytest.StashKey[HeldPlace]()
LABGRID_WORKER_INPUT = "rknn_labgrid_boards"  # the controller's place, handed to pytest-xdist workers


def labgrid_request(config: pytest.Config, boards) -> Optional[PlaceRequest]:
    """The labgrid place the options ask for, or None; refused next to --rknn-board."""
    place, tags = get_option(config, "--rknn-labgrid-place"), get_option(config, "--rknn-labgrid-tags")
    if (place is None and tags is None) or getattr(config.option, "help", False):  # `pytest --help` needs no board
        return None
    asked = "--rknn-labgrid-place" if place is not None else "--rknn-labgrid-tags"
    if boards:
        raise pytest.UsageError(f"--rknn-board and {asked} both say where the board is; give one of them "
                                f"(--rknn-board for fixed addresses, {asked} to take a board from labgrid)")
    coordinator = (get_option(config, "--rknn-labgrid-coordinator") or os.environ.get("LG_COORDINATOR")
                   or DEFAULT_COORDINATOR).strip()
    if not coordinator or any(c.isspace() for c in coordinator):
        raise pytest.UsageError(f"--rknn-labgrid-coordinator: '{coordinator}' is not HOST:PORT "
                                f"(write e.g. --rknn-labgrid-coordinator=labgrid.lab:20408)")
    client = get_option(config, "--rknn-labgrid-client")
    return PlaceRequest(coordinator, place.strip() if place else None, tags or {},
                        get_option(config, "--rknn-labgrid-wait"), os.path.expanduser(client) if client else None)


def labgrid_boards(config: pytest.Config, request: PlaceRequest, progress: Callable[[str], None]):
    """The boards and SSH user of the labgrid place: taken here in the controller (released when pytest
    ends, whatever happens), handed over as they are in a pytest-xdist worker (see hand_to_worker)."""
    worker_input = getattr(config, "workerinput", None)
    if worker_input is not None:
        handed = worker_input.get(LABGRID_WORKER_INPUT)
        if handed is None:
            raise pytest.UsageError("--rknn-labgrid-place/--rknn-labgrid-tags: this pytest-xdist worker got no board "
                                    "from its controller (is pytest-rknn loaded in the controller too?)")
        return parse_board_option(handed["boards"]), handed["user"]
    for option in OPTIONS:  # every value checked before waiting for a place, not after
        get_option(config, option.flag)
    _interrupt_on_sigterm(config)
    try:
        held = take_place(request, progress)
    except RknnError as exc:
        raise pytest.UsageError(exc.message) from None
    config.stash[LABGRID_KEY] = held
    config.add_cleanup(lambda: _release(held))
    return held.boards, held.user


def _interrupt_on_sigterm(config: pytest.Config) -> None:
    """SIGTERM (a cancelled CI job) ends the session as Ctrl-C does, so the place is still given back;
    by default it would end the process at once, and labgrid keeps a place acquired until it is released."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # someone else's handler: leave it

    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    def restore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: only that one can have handlers
        return
    config.add_cleanup(restore)  # cleanups run last first: this one after the release


def _release(held: HeldPlace) -> None:
    for problem in held.release():
        print(f"pytest-rknn: could not give labgrid place {held.name} back: {problem} (release it by hand: "
              f"labgrid-client -x {held.client.coordinator} -p {held.name} release)", file=sys.stderr, flush=True)


def hand_to_worker(config: pytest.Config, worker_input: dict) -> None:
    """pytest_configure_node: a worker uses the controller's place instead of taking one itself."""
    held = config.stash.get(LABGRID_KEY, None)
    if held is not None:
        worker_input[LABGRID_WORKER_INPUT] = {"boards": ",".join(str(b) for b in held.boards), "user": held.user}
