"""The live display of `fedrisk run`: one bar for the units, one line per unit in flight, logs above them.

Worker processes report through one multiprocessing queue handed to each worker at start-up
(``init_worker``/``worker_args``): progress events from ``fedrisk.core.progress`` and log records via the
standard library's ``QueueHandler``. A thread in the main process drains the queue into rich's
``Progress`` and into a ``RichHandler``, so Flower's and other libraries' log lines print above the live
bars instead of tearing them. Without a terminal (or with --quiet) nothing is drawn or rerouted.
"""

from __future__ import annotations

import logging
import queue as queue_module
import threading
from logging.handlers import QueueHandler
from multiprocessing import get_context
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column

from fedrisk.core import progress as events

_ACTIVE: RunProgress | None = None


class RunProgress:
    """Context manager around a run: ``with RunProgress(name, n_units, console, enabled) as p: ...``."""

    def __init__(self, title: str, n_units: int, console: Console, enabled: bool = True) -> None:
        self.title, self.n_units, self.console, self.enabled = title, n_units, console, enabled
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn(
                "{task.description}", table_column=Column(width=46, no_wrap=True, overflow="ellipsis")
            ),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        self._overall: TaskID | None = None
        self._finished = 0
        self._lock = threading.Lock()
        self._units: dict[str, TaskID] = {}
        self._queue: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._saved: Any = None
        self._previous_reporter: events.Reporter | None = None

    def __enter__(self) -> RunProgress:
        global _ACTIVE
        self._progress.__enter__()
        self._overall = self._progress.add_task(
            f"[bold]{self.title}", total=self.n_units, count=f"0/{self.n_units} units"
        )
        if self.enabled:
            self._previous_reporter = events.set_reporter(self.on_event)
            self._saved = route_logs(RichHandler(console=self._progress.console, show_path=False))
            self._queue = get_context("spawn").Queue()
            self._thread = threading.Thread(target=self._drain, name="fedrisk-progress", daemon=True)
            self._thread.start()
            _ACTIVE = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _ACTIVE
        if self.enabled:
            _ACTIVE = None
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=2)
            restore_logs(self._saved)
            events.set_reporter(self._previous_reporter)
            self._queue.close()
        self._progress.__exit__(*exc)

    def on_event(self, unit: str, stage: str, done: int, total: int | None) -> None:
        """A unit's step (from this process or, via the queue, a worker): show it on the unit's line."""
        if not self.enabled or not unit:
            return
        with self._lock:
            task = self._units.get(unit)
            if task is None:
                task = self._units[unit] = self._progress.add_task("", total=None, count="")
        count = f"{done}/{total}" if total else (str(done) if done else "")
        self._progress.update(
            task, description=f"  {unit} · {stage}", total=total or None, completed=done, count=count
        )

    def unit_done(self, point: str, seed: int, ran: list[str]) -> None:
        """The runner's ``on_unit_done``: advance the overall bar, drop the unit's line, say what ran."""
        assert self._overall is not None
        self._finished += 1
        self._progress.update(
            self._overall, completed=self._finished, count=f"{self._finished}/{self.n_units} units"
        )
        with self._lock:
            task = self._units.pop(f"{point} seed={seed}", None)
        if task is not None:
            self._progress.remove_task(task)
        if self.enabled:
            self._progress.console.print(
                f"  {point} seed={seed}: {', '.join(ran) if ran else 'already done'}"
            )

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.1)
            except (queue_module.Empty, OSError, EOFError, ValueError):
                continue
            if isinstance(item, logging.LogRecord):
                logging.getLogger(item.name).handle(item)
            elif isinstance(item, tuple) and item and item[0] == "progress":
                self.on_event(*item[1])


# ---------------------------------------------------------------------------------------------------------
# Worker processes and log routing


def worker_args() -> tuple[Any]:
    """``initargs`` for the runner's process pool: the active display's queue, or None (no display)."""
    return (_ACTIVE._queue if _ACTIVE is not None else None,)


def init_worker(queue: Any) -> None:
    """Pool initializer: send this worker's progress events and log records to the main process."""
    if queue is None:
        return
    events.set_reporter(lambda *event: queue.put(("progress", event)))
    route_logs(QueueHandler(queue))


def route_logs(handler: logging.Handler) -> dict:
    """Send the root logger, Flower's logger and Python warnings to ``handler``; returns what to restore."""
    from flwr.common.logger import LOGGER_NAME  # importing Flower's logger first, or it re-adds its handler

    root, flower = logging.getLogger(), logging.getLogger(LOGGER_NAME)
    saved = {
        "root": root.handlers[:],
        "flower": flower.handlers[:],
        "propagate": flower.propagate,
    }
    root.handlers[:] = [handler]
    flower.handlers[:] = [handler]
    flower.propagate = False  # one line per record, not one per handler on the way up
    logging.captureWarnings(True)
    return saved


def restore_logs(saved: dict | None) -> None:
    if not saved:
        return
    from flwr.common.logger import LOGGER_NAME

    flower = logging.getLogger(LOGGER_NAME)
    logging.getLogger().handlers[:] = saved["root"]
    flower.handlers[:] = saved["flower"]
    flower.propagate = saved["propagate"]
    logging.captureWarnings(False)
