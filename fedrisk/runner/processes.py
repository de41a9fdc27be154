"""Child processes that never outlive the run: a worker pool that stops on Ctrl-C, workers that follow
their parent, and one call that ends every process a run started.

Why by hand: `concurrent.futures` waits for running jobs on Ctrl-C (a unit can take minutes) and its
workers keep computing when the parent is killed; psutil finds the process tree (pool workers, Ray's
processes, Flower's subprocesses, PSI's forkserver) so it can be ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

import psutil

from fedrisk.core.errors import FedriskWarning

PARENT_POLL_SECONDS = 0.5
"""How often a worker checks that its parent is alive (so it is gone within about a second of it)."""


def end_process_tree(processes: Sequence[psutil.Process], timeout: float = 3.0) -> None:
    """Terminate ``processes`` and all their descendants; what ignores SIGTERM is killed after ``timeout``."""
    tree: dict[int, psutil.Process] = {}
    for process in processes:  # collect first: once a parent dies its children are re-parented and lost
        with contextlib.suppress(psutil.Error):
            for p in [process, *process.children(recursive=True)]:
                tree[p.pid] = p
    for p in tree.values():
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(list(tree.values()), timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=1.0)


def end_children(timeout: float = 3.0, keep: Collection[int] = ()) -> int:
    """End every descendant of this process except the pids in ``keep``; returns how many were ended."""
    children = [p for p in psutil.Process().children(recursive=True) if p.pid not in keep]
    end_process_tree(children, timeout)
    return len(children)


def child_pids() -> set[int]:
    """This process's descendants now (to spare, e.g., a test runner's own helpers, in `end_children`)."""
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _follow_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:  # re-parented: the parent died, even by SIGKILL
            with contextlib.suppress(Exception):
                end_children(timeout=2.0)
            os._exit(1)
        time.sleep(PARENT_POLL_SECONDS)


def init_worker(
    parent_pid: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()
) -> None:
    """Start of every pool worker: follow the parent, leave Ctrl-C to it, leave warnings to it; then the
    caller's own ``initializer(*initargs)``."""
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends the workers; no traceback from each
    # the parent already reported these (preflight, unit checks); each worker would repeat them
    warnings.simplefilter("ignore", FedriskWarning)
    threading.Thread(
        target=_follow_parent, args=(parent_pid,), name="fedrisk-follow-parent", daemon=True
    ).start()
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """Ignore SIGINT while workers are spawned, so they are born ignoring it (a spawned interpreter keeps
    an inherited SIG_IGN), not only once `init_worker` runs."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: no signals to manage
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_in_pool(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    workers: int,
    on_result: Callable[[tuple, Any], None] | None = None,
    *,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> None:
    """Run ``fn(*job)`` for each job in ``workers`` spawned processes; ``on_result(job, result)`` per result.

    On Ctrl-C or any error, jobs not started are cancelled and the workers (with everything they started)
    are ended at once, then the exception propagates; workers exit by themselves if this process dies.
    ``initializer(*initargs)`` runs in each worker after `init_worker` (e.g. the live display's queue).
    """
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=init_worker,
        initargs=(os.getpid(), initializer, initargs),
    )
    try:
        with _ctrl_c_ignored():  # every worker is spawned by the first `workers` submits
            futures = {pool.submit(fn, *job): job for job in jobs}
        for future in as_completed(futures):
            result = future.result()
            if on_result is not None:
                on_result(futures[future], result)
    except BaseException:
        # CPython's pool keeps its workers in `_processes` (pid -> Process); the public API has no handle
        pids = list(getattr(pool, "_processes", None) or {})
        pool.shutdown(wait=False, cancel_futures=True)
        end_process_tree([p for p in map(_process, pids) if p is not None])
        raise
    pool.shutdown(wait=True)


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None
