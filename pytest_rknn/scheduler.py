"""Runs the session's simulator jobs ahead of their items, on a pool of --rknn-jobs threads.

When collection ends, every (spec, version) simulator job of the session's spec items is handed
to the pool, in collection order, so the cores are busy from the first item. The items still run
one after the other in collection order; each waits only for its own job (the runner's caches
hold one computation per key, so the item and the pool never build twice) and then judges as
before. Board jobs stay in their items: the board is one device.

Under pytest-xdist every worker collects all items but runs only some, so there the jobs are
handed over lazily: an item's own job and the next item's, when the item starts. The cores are
shared: each worker gets --rknn-jobs // (number of workers) threads, at least one.

With one thread nothing runs ahead: today's order.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, Iterable, List, Optional, Set, Tuple

import pytest

from .items import RknnItem
from .spec import Spec

CLOSE_WAIT_SECONDS = 30.0  # for the running jobs to end once their workers are killed


def xdist_worker_count(config: pytest.Config) -> Optional[int]:
    """How many pytest-xdist workers share the machine, seen from inside one; None outside xdist."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return None
    count = workerinput.get("workercount") or os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    return int(count) if count else 1


def threads_per_process(jobs: int, xdist_workers: Optional[int]) -> int:
    """--rknn-jobs for the whole machine, split between xdist workers so they do not oversubscribe it."""
    return max(1, jobs // xdist_workers) if xdist_workers else jobs


def simulator_jobs(items: Iterable[pytest.Item]) -> List[Tuple[Spec, str]]:
    """(spec, version) of each spec item whose spec could be read, in item order. rknn_result tests
    run their jobs in order, and a spec that cannot be read needs no job."""
    return [(item.spec, item.version) for item in items if isinstance(item, RknnItem) and item.spec is not None]


class JobScheduler:
    """Hands (spec, version) jobs to `run_job` on `threads` threads, each job once (a sim and a board
    item of one spec and version share one)."""

    def __init__(self, run_job: Callable[[Spec, str], None], threads: int, lazy: bool = False,
                 stop_running: Callable[[], None] = lambda: None):
        """`lazy`: under xdist, jobs are handed over as items start, not at the end of collection.
        `stop_running`: kills the workers of jobs still running (at close, e.g. after Ctrl-C)."""
        self.threads = threads
        self.lazy = lazy
        self._run_job = run_job
        self._stop_running = stop_running
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="rknn-job") if threads > 1 else None
        self._handed_over: Set[Tuple[str, str, str]] = set()
        self._futures: List[Future] = []

    def collection_finished(self, session: pytest.Session) -> None:
        if not self.lazy and not session.config.option.collectonly:
            self.submit(simulator_jobs(session.items))

    def item_starting(self, item: pytest.Item, nextitem: Optional[pytest.Item]) -> None:
        if self.lazy:
            self.submit(simulator_jobs([item] + ([nextitem] if nextitem is not None else [])))

    def submit(self, jobs: Iterable[Tuple[Spec, str]]) -> None:
        if self._pool is None:
            return
        for spec, version in jobs:
            key = (str(spec.path), spec.config_hash(), version)
            if key not in self._handed_over:
                self._handed_over.add(key)
                self._futures.append(self._pool.submit(self._run_job, spec, version))

    def close(self) -> None:
        """Cancel the jobs not started, kill the workers of those running, and wait (bounded) for
        the threads to end. Called at sessionfinish, also after Ctrl-C."""
        if self._pool is None:
            return
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None
        running = [f for f in self._futures if not f.done()]
        if running:
            self._stop_running()
            still_running = wait(running, timeout=CLOSE_WAIT_SECONDS).not_done
            if still_running:
                raise RuntimeError(f"{len(still_running)} simulator jobs still running {CLOSE_WAIT_SECONDS:g} s "
                                   f"after their workers were killed")
