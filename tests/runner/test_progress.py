"""Progress inside a unit (epochs, PSI, rounds) reaches the display, from worker processes too, and
library logs print above the bars instead of on the raw terminal."""

from __future__ import annotations

import io
import logging
import re
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
from rich.console import Console

from fedrisk.config.model import TrainConfig
from fedrisk.core import progress
from fedrisk.models.nets import make_model
from fedrisk.models.training import train
from fedrisk.runner.progress import RunProgress, init_worker, worker_args


def test_without_a_reporter_reports_are_free_and_with_one_they_carry_unit_and_method() -> None:
    progress.report("epoch", 1, 3)  # no reporter: nothing happens, nothing raises
    seen: list[tuple] = []
    previous = progress.set_reporter(lambda *event: seen.append(event))
    try:
        progress.begin_unit("base", 4)
        progress.begin_method("federated")
        progress.report("epoch", 2, 30)
    finally:
        progress.set_reporter(previous)
    assert seen == [
        ("base seed=4", "preparing data", 0, None),
        ("base seed=4", "federated: starting", 0, None),
        ("base seed=4", "federated: epoch", 2, 30),
    ]


def test_the_one_training_loop_reports_every_epoch() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 3)).astype(np.float32), (rng.random(200) < 0.3).astype(np.float32)
    seen: list[tuple] = []
    previous = progress.set_reporter(lambda *event: seen.append(event))
    try:
        train(make_model("logistic", 3), X, y, X, y, TrainConfig(epochs=4, patience=0, batch_size=64))
    finally:
        progress.set_reporter(previous)
    assert [(stage.split(": ")[-1], done, total) for _, stage, done, total in seen] == [
        ("epoch", e, 4) for e in range(1, 5)
    ]


def _worker_step(message: str) -> str:
    """Runs in a spawned worker: what a unit does (report progress, a library logs a warning)."""
    from flwr.common.logger import log

    progress.begin_unit("base", 7)
    progress.begin_method("siloed")
    progress.report("epoch", 3, 10)
    log(logging.WARNING, "flower says %s", message)
    logging.getLogger("somelib").warning("somelib says %s", message)
    return message


def test_worker_progress_and_logs_reach_the_main_display(capfd) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    seen: list[tuple] = []
    with RunProgress("demo", 1, console, enabled=True) as display:
        on_event = display.on_event
        display.on_event = lambda *event: (seen.append(event), on_event(*event))  # type: ignore[method-assign]
        with ProcessPoolExecutor(
            1, mp_context=get_context("spawn"), initializer=init_worker, initargs=worker_args()
        ) as pool:
            assert pool.submit(_worker_step, "hello").result(timeout=60) == "hello"
        for _ in range(50):  # the drain thread delivers within a few 0.1 s polls
            if ("base seed=7", "siloed: epoch", 3, 10) in seen:
                break
            time.sleep(0.1)
        display.unit_done("base", 7, ["siloed"])
    assert ("base seed=7", "siloed: epoch", 3, 10) in seen
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())  # without rich's colour codes
    assert "flower says hello" in text and "somelib says hello" in text  # printed through rich
    captured = capfd.readouterr()
    assert "says hello" not in captured.err and "says hello" not in captured.out  # not torn onto the tty
    assert "base seed=7: siloed" in text


def test_without_a_display_workers_get_no_queue() -> None:
    assert worker_args() == (None,)
    init_worker(None)  # a no-op: the worker keeps its own logging
    assert progress.set_reporter(None) is None
