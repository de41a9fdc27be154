"""The only loop: sweep points x seeds x methods (and audits) -> finished unit files.

Each (point, seed) is a unit of work that builds the setting (the parties' tables and splits) and runs every
unfinished method on it; each method's outcome is written atomically the moment it finishes, so a killed run
resumes where it stopped. Before resuming, unit files that are damaged or belong to another config, seed or
input tables are named in a warning and recomputed. Transports (in-process, Flower simulation, deployment)
are chosen inside the methods; the summary (`fedrisk.evaluation.results`) is built from the unit files.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedrisk.config import ExperimentConfig, point_label, sweep_points
from fedrisk.core import progress
from fedrisk.core.errors import FedriskWarning
from fedrisk.data.setting import build_setting, data_summary
from fedrisk.methods.registry import METHODS, run_method
from fedrisk.runner.output import check_output, prepare_output
from fedrisk.runner.processes import run_in_pool
from fedrisk.runner.progress import init_worker, worker_args
from fedrisk.runner.splits_file import collect_splits, write_unit_splits
from fedrisk.runner.units import (
    AUDIT_PREFIX,
    DATA_FILE,
    Unit,
    discard_bad_units,
    finished_methods,
    inputs_fingerprint,
    load_outcome,
    load_record,
    save_outcome,
    save_record,
    unit_dir,
    unit_fingerprint,
)

__all__ = [
    "check_output",
    "prepare_output",
    "run_unit",
    "run_units",
    "load_units",
    "load_audits",
    "load_data",
]

PSI_CACHE = Path("work") / "psi"
"""Where, under the results directory, alignments are cached (they depend on the tables only)."""


def run_unit(
    config: ExperimentConfig,
    point: str,
    seed: int,
    root: Path,
    methods: tuple[str, ...],
    backend: Any = None,
    fingerprint: str = "",
) -> list[str]:
    """Run the unfinished methods of one (point, seed); returns the methods it ran.

    ``backend`` (a name or a deployment `Engine`) overrides ``federation.backend`` for the federated method;
    ``fingerprint`` (`unit_fingerprint`) is recorded in every file the unit writes."""
    import torch

    from fedrisk.federation.logs import set_flower_log_level

    torch.set_num_threads(config.training.num_threads)
    set_flower_log_level(config.runner.flower_log_level)
    directory = unit_dir(root, point, seed)
    todo = [m for m in methods if m not in finished_methods(directory)]
    audits = [a for a in config.audit.enabled() if not (directory / f"{AUDIT_PREFIX}{a}.json").exists()]
    if not todo and not audits and (directory / DATA_FILE).exists():
        return []
    progress.begin_unit(point, seed)
    setting = build_setting(config, seed)
    if not (directory / DATA_FILE).exists():
        save_record(directory / DATA_FILE, data_summary(setting), fingerprint, seed)
    write_unit_splits(directory, setting, seed)  # splits.parquet: one split per firm, for a validator
    for method in todo:
        progress.begin_method(method)
        workdir = _fresh_workdir(root, point, seed, method)
        outcome = run_method(method, config, setting, seed, workdir, backend, psi_cache=root / PSI_CACHE)
        save_outcome(directory, outcome, fingerprint, seed)
        shutil.rmtree(workdir, ignore_errors=True)
    if audits:
        from fedrisk.audit.runner import run_audit

        outcomes = {m: load_outcome(directory, m) for m in finished_methods(directory)}
        for name in audits:
            progress.begin_method(f"audit {name}")
            workdir = _fresh_workdir(root, point, seed, f"audit_{name}")
            result = run_audit(name, config, setting, seed, outcomes, workdir)
            save_record(directory / f"{AUDIT_PREFIX}{name}.json", result, fingerprint, seed)
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
    """Prepare ``root`` and run (or resume) every unit; returns the sweep points.

    Ctrl-C ends the workers and everything they started at once (see `run_in_pool`); the finished units stay.
    """
    prepare_output(root, config, force)
    points = sweep_points(config, raw)
    inputs = inputs_fingerprint(config)
    jobs = []
    for assignment, cfg in points:
        label = point_label(assignment)
        for seed in cfg.seeds:
            fingerprint = unit_fingerprint(cfg, seed, inputs)
            for message in discard_bad_units(unit_dir(root, label, seed), fingerprint, seed):
                warnings.warn(message, FedriskWarning, stacklevel=2)
            jobs.append((cfg, label, seed, root, methods, backend, fingerprint))
    workers = min(config.runner.workers, len(jobs))
    if config.federation.backend == "ray" or backend is not None:
        workers = 1  # Ray already uses both cores; an engine object lives in this process

    def done(job: tuple, ran: list[str]) -> None:
        if on_unit_done:
            on_unit_done(job[1], job[2], ran)

    if workers <= 1:
        for job in jobs:
            done(job, run_unit(*job))
    else:
        run_in_pool(run_unit, jobs, workers, done, initializer=init_worker, initargs=worker_args())
    collect_splits(root)
    return points


# ---------------------------------------------------------------------------------------------------------
# Reading the finished units back


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
                path = unit_dir(root, label, seed) / f"{AUDIT_PREFIX}{name}.json"
                if path.exists():
                    out.setdefault(label, {}).setdefault(name, {})[f"seed={seed}"] = load_record(path)
    return out


def load_data(root: Path, points) -> dict[str, dict]:
    """``{point: data block}``: rows per holder and each partner's match rate (mean over seeds, with each
    seed's), from the units' ``data.json``."""
    out: dict[str, dict] = {}
    for assignment, cfg in points:
        label = point_label(assignment)
        per_seed = {}
        for seed in cfg.seeds:
            path = unit_dir(root, label, seed) / DATA_FILE
            if path.exists():
                per_seed[seed] = load_record(path)
        if per_seed:
            out[label] = _merge_data(per_seed)
    return out


def _merge_data(per_seed: dict[int, dict]) -> dict:
    first = next(iter(per_seed.values()))
    block = {k: v for k, v in first.items() if k != "partners"}
    if "partners" in first:
        block["partners"] = {}
        for name in first["partners"]:
            rates = {f"seed={s}": d["partners"][name]["match_rate"] for s, d in per_seed.items()}
            matched = [d["partners"][name]["matched"] for d in per_seed.values()]
            block["partners"][name] = {
                **first["partners"][name],
                "matched": matched[0] if len(set(matched)) == 1 else sum(matched) / len(matched),
                "match_rate": sum(rates.values()) / len(rates),
                "match_rate_by_seed": rates,
            }
    return block
