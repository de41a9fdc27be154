"""The only loop: sweep points x seeds x methods (and audits) -> finished unit files.

Each (point, seed) is a unit of work that builds the setting (the parties' tables and splits) and runs every
unfinished method on it; each method's outcome is written atomically the moment it finishes, so a killed run
resumes where it stopped. Transports (in-process, Flower simulation, deployment) are chosen inside the
methods; the summary (`fedrisk.evaluation.results`) is built from the unit files afterwards.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from fedrisk.config import ExperimentConfig, point_label, sweep_points
from fedrisk.core import progress
from fedrisk.core.jsonio import atomic_write_json
from fedrisk.data.setting import build_setting
from fedrisk.methods.registry import METHODS, run_method
from fedrisk.runner.output import check_output, prepare_output
from fedrisk.runner.progress import init_worker, worker_args
from fedrisk.runner.units import Unit, finished_methods, load_outcome, save_outcome, unit_dir

__all__ = ["check_output", "prepare_output", "run_unit", "run_units", "load_units", "load_audits"]


def run_unit(
    config: ExperimentConfig, point: str, seed: int, root: Path, methods: tuple[str, ...], backend: Any = None
) -> list[str]:
    """Run the unfinished methods of one (point, seed); returns the methods it ran.

    ``backend`` (a name or a deployment `Engine`) overrides ``federation.backend`` for the federated method."""
    import torch

    from fedrisk.federation.logs import set_flower_log_level

    torch.set_num_threads(config.training.num_threads)
    set_flower_log_level(config.runner.flower_log_level)
    directory = unit_dir(root, point, seed)
    todo = [m for m in methods if m not in finished_methods(directory)]
    audits = [a for a in config.audit.enabled() if not (directory / f"audit_{a}.json").exists()]
    if not todo and not audits:
        return []
    progress.begin_unit(point, seed)
    setting = build_setting(config, seed)
    for method in todo:
        progress.begin_method(method)
        workdir = _fresh_workdir(root, point, seed, method)
        outcome = run_method(method, config, setting, seed, workdir, backend)
        save_outcome(directory, outcome)
        shutil.rmtree(workdir, ignore_errors=True)
    if audits:
        from fedrisk.audit.runner import run_audit

        outcomes = {m: load_outcome(directory, m) for m in finished_methods(directory)}
        for name in audits:
            progress.begin_method(f"audit {name}")
            workdir = _fresh_workdir(root, point, seed, f"audit_{name}")
            result = run_audit(name, config, setting, seed, outcomes, workdir)
            atomic_write_json(directory / f"audit_{name}.json", result)
            shutil.rmtree(workdir, ignore_errors=True)
    return todo + [f"audit:{a}" for a in audits]


def _fresh_workdir(root: Path, point: str, seed: int, name: str) -> Path:
    workdir = root / "work" / point / f"seed={seed}" / name
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    return workdir


ProgressCallback = Callable[[str, int, list[str]], None]


def run_units(
    config: ExperimentConfig,
    raw: dict,
    root: Path,
    *,
    force: bool = False,
    methods: tuple[str, ...] = METHODS,
    on_unit_done: ProgressCallback | None = None,
    backend: Any = None,
) -> list:
    """Prepare ``root`` and run (or resume) every unit; returns the sweep points."""
    prepare_output(root, config, force)
    points = sweep_points(config, raw)
    jobs = [(point_label(a), a, cfg, seed) for a, cfg in points for seed in cfg.seeds]
    workers = min(config.runner.workers, len(jobs))
    if config.federation.backend == "ray" or backend is not None:
        workers = 1  # Ray already uses both cores; an engine object lives in this process
    if workers <= 1:
        for label, _, cfg, seed in jobs:
            ran = run_unit(cfg, label, seed, root, methods, backend)
            if on_unit_done:
                on_unit_done(label, seed, ran)
    else:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=init_worker,
            initargs=worker_args(),
        ) as pool:
            futures = {
                pool.submit(run_unit, cfg, label, seed, root, methods): (label, seed)
                for label, _, cfg, seed in jobs
            }
            try:
                for future in as_completed(futures):
                    ran = future.result()
                    if on_unit_done:
                        on_unit_done(*futures[future], ran)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return points


def load_units(root: Path, points, methods: tuple[str, ...]) -> list[Unit]:
    units = []
    for assignment, cfg in points:
        label = point_label(assignment)
        for seed in cfg.seeds:
            directory = unit_dir(root, label, seed)
            done = finished_methods(directory)
            outcomes = {m: load_outcome(directory, m) for m in methods if m in done}
            units.append(Unit(label, assignment, seed, outcomes))
    return units


def load_audits(root: Path, points, names: list[str]) -> dict[str, dict[str, dict]]:
    """``{point: {audit: {"seed=<s>": result}}}`` for the audits that finished."""
    out: dict[str, dict[str, dict]] = {}
    for assignment, cfg in points:
        label = point_label(assignment)
        for seed in cfg.seeds:
            for name in names:
                path = unit_dir(root, label, seed) / f"audit_{name}.json"
                if path.exists():
                    out.setdefault(label, {}).setdefault(name, {})[f"seed={seed}"] = json.loads(
                        path.read_text()
                    )
    return out
