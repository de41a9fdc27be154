"""One experiment end to end: check the inputs, run every unit, summarise (what `fedrisk run` calls)."""

from __future__ import annotations

import time
from pathlib import Path

from fedrisk.config import ExperimentConfig
from fedrisk.evaluation.results import finalize
from fedrisk.methods.registry import METHODS, methods_for, preflight
from fedrisk.runner.loop import ProgressCallback, check_output, run_units


def run_experiment(
    config: ExperimentConfig,
    raw: dict,
    root: Path,
    *,
    force: bool = False,
    methods: tuple[str, ...] = METHODS,
    on_unit_done: ProgressCallback | None = None,
) -> dict:
    """Run (or resume) every unit, then write metrics.csv, history.csv and results.json; returns the results.

    Bad input (``--out``, holders, tables) fails in one line before anything is written or removed.
    """
    start = time.perf_counter()
    check_output(root, config, force)
    preflight(config, raw)
    methods = methods_for(config, methods)
    points = run_units(config, raw, root, force=force, methods=methods, on_unit_done=on_unit_done)
    return finalize(root, config, points, methods, time.perf_counter() - start)
