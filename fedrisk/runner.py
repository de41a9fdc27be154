"""Run an experiment: sweep points x seeds x methods -> a results directory.

Each (point, seed) is a unit of work that generates (or loads) the parties' tables, splits the label
holder's applicants, and runs every method on them; each method's outcome is written atomically the
moment it finishes, so a killed run resumes where it stopped. `results.json` is written last and is the
only file that says ``"complete": true``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from fedrisk import __version__
from fedrisk.config import ExperimentConfig, point_label, sweep_points
from fedrisk.errors import FedriskError
from fedrisk.evaluation.summary import Unit, metric_rows, summarize_point
from fedrisk.outcome import MethodOutcome
from fedrisk.parties.table import PartyTable
from fedrisk.results import (
    atomic_write_bytes,
    atomic_write_json,
    fingerprint,
    finished_methods,
    load_outcome,
    save_outcome,
    unit_dir,
)

METHODS = ("siloed", "centralized", "federated")


# ---------------------------------------------------------------------------------------------------------
# Parties and topology


@dataclass
class Setting:
    """Who holds what in one unit: the tables, the topology and the label holders' splits."""

    topology: str
    parties: dict[str, PartyTable]
    label_holders: list[str]
    splits: dict[str, dict[str, np.ndarray]]


def build_parties(config: ExperimentConfig, seed: int) -> dict[str, PartyTable]:
    if config.data.source == "tables":
        from fedrisk.parties.tables import load_tables

        return load_tables(config.data.parties)
    from fedrisk.synthetic import generate_world

    return generate_world(config.world, seed).parties


def resolve_topology(config: ExperimentConfig, parties: Mapping[str, PartyTable]) -> tuple[str, list[str]]:
    """Vertical: exactly one labelled party. Horizontal: several labelled parties with the same columns."""
    labelled = [name for name, t in parties.items() if t.has_label]
    if not labelled:
        raise FedriskError("data.parties", "no party has a label", "set label = '<column>' on the label holder")
    topology = config.topology
    if topology == "auto":
        topology = "vertical" if len(labelled) == 1 else "horizontal"
    if topology == "vertical":
        if len(labelled) != 1:
            raise FedriskError(
                "data.parties",
                f"vertical federation needs exactly one labelled party (got {len(labelled)}: {', '.join(labelled)})",
                "keep the label on the label holder only, or set topology = 'horizontal'",
            )
        if len(parties) < 2 and config.data.partners is None:
            raise FedriskError("data.parties", "vertical federation needs at least one partner", "add a partner's table")
        return topology, labelled
    if len(labelled) < 2:
        raise FedriskError(
            "topology", "horizontal federation needs at least two labelled parties", "add banks or use 'vertical'"
        )
    reference = list(parties[labelled[0]].features.columns)
    for name in labelled[1:]:
        columns = list(parties[name].features.columns)
        if sorted(columns) != sorted(reference):
            missing = sorted(set(reference) - set(columns))[:5]
            extra = sorted(set(columns) - set(reference))[:5]
            raise FedriskError(
                f"data.parties.{name}",
                f"feature columns differ from '{labelled[0]}' (missing {missing}, extra {extra})",
                "horizontal federation needs the same feature columns at every bank",
            )
    return topology, labelled


def build_setting(config: ExperimentConfig, seed: int) -> Setting:
    from fedrisk.parties.splits import split_applicants

    parties = build_parties(config, seed)
    topology, label_holders = resolve_topology(config, parties)
    if topology == "vertical" and config.data.partners is not None:
        unknown = sorted(set(config.data.partners) - set(parties))
        if unknown:
            raise FedriskError(
                "data.partners", f"unknown holders {unknown}", f"choose from {sorted(set(parties) - set(label_holders))}"
            )
        keep = set(label_holders) | set(config.data.partners)
        parties = {name: table for name, table in parties.items() if name in keep}
    s = config.split
    splits = {
        name: split_applicants(parties[name], s.test_fraction, s.val_fraction, seed, s.out_of_time)
        for name in label_holders
    }
    if topology == "horizontal":
        parties = {name: parties[name] for name in label_holders}
    else:  # a partner that knows none of the training applicants has nothing to train on (wrong id column?)
        holder = label_holders[0]
        for name, table in parties.items():
            if name != holder and not np.isin(splits[holder]["train"], table.ids).any():
                raise FedriskError(
                    f"data.parties.{name}.id",
                    f"no id in common with {holder}'s training applicants "
                    f"(e.g. {table.ids[0]!r} vs {splits[holder]['train'][0]!r})",
                    "check the id column and that ids are written the same way in both tables",
                )
    return Setting(topology, parties, label_holders, splits)


# ---------------------------------------------------------------------------------------------------------
# Methods


def coverage_segments(setting: Setting) -> dict[str, dict[str, np.ndarray]]:
    """For vertical runs: which test applicants each partner knows (KS is reported for both groups)."""
    if setting.topology != "vertical":
        return {}
    holder = setting.label_holders[0]
    out: dict[str, dict[str, np.ndarray]] = {}
    for split, ids in setting.splits[holder].items():
        if split in ("train", "val"):
            continue
        masks = {}
        for name, table in setting.parties.items():
            if name == holder:
                continue
            known = np.isin(ids, table.ids)
            masks[f"covered_by_{name}"] = known
            masks[f"uncovered_by_{name}"] = ~known
        out[split] = masks
    return out


def run_method(method: str, config: ExperimentConfig, setting: Setting, seed: int, workdir: Path) -> MethodOutcome:
    from fedrisk import baselines

    vertical = setting.topology == "vertical"
    holder = setting.label_holders[0]
    if method == "siloed":
        if vertical:
            segments = coverage_segments(setting)
            return baselines.siloed_vertical(
                setting.parties[holder], setting.splits[holder], config.model, config.training, seed, segments
            )
        return baselines.siloed_horizontal(setting.parties, setting.splits, config.model, config.training, seed)
    if method == "centralized":
        if vertical:
            # the federated model's pooled twin: same encoding, architecture, init, batches and stopping,
            # so federated vs centralized isolates what federation itself costs
            from fedrisk.federation.vertical import train_centralized_twin

            twin = train_centralized_twin(
                setting.parties,
                holder,
                setting.splits[holder],
                config.model.kind,
                config.training,
                config.federation.vertical,
                seed,
            )
            return twin.to_method_outcome("centralized", holder)
        return baselines.centralized_horizontal(setting.parties, setting.splits, config.model, config.training, seed)
    if method in baselines.REFERENCE_MODELS:
        return baselines.reference_model(method, setting.parties, setting.label_holders, setting.splits, seed)
    if method == "federated":
        if vertical:
            from fedrisk.federation.adapters import federated_vertical

            return federated_vertical(config, setting, seed, workdir, coverage_segments(setting))
        from fedrisk.federation.adapters import federated_horizontal

        return federated_horizontal(config, setting, seed, workdir)
    raise ValueError(f"unknown method {method!r}")


def run_unit(config: ExperimentConfig, point: str, seed: int, root: Path, methods: tuple[str, ...]) -> list[str]:
    """Run the unfinished methods of one (point, seed); returns the methods it ran."""
    import logging

    import torch

    torch.set_num_threads(config.training.num_threads)
    logging.getLogger("flwr").setLevel(config.runner.flower_log_level)
    directory = unit_dir(root, point, seed)
    todo = [m for m in methods if m not in finished_methods(directory)]
    audits = [a for a in config.audit.enabled() if not (directory / f"audit_{a}.json").exists()]
    if not todo and not audits:
        return []
    setting = build_setting(config, seed)
    for method in todo:
        workdir = _fresh_workdir(root, point, seed, method)
        outcome = run_method(method, config, setting, seed, workdir)
        save_outcome(directory, outcome)
        shutil.rmtree(workdir, ignore_errors=True)
    if audits:
        from fedrisk.audit.runner import run_audit

        outcomes = {m: load_outcome(directory, m) for m in finished_methods(directory)}
        for name in audits:
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


# ---------------------------------------------------------------------------------------------------------
# The results directory


def prepare_output(root: Path, config: ExperimentConfig, force: bool) -> None:
    """Refuse to overwrite a finished run; resume an unfinished run of the same experiment."""
    dump = config.model_dump(mode="json")
    print_ = fingerprint(dump)
    results = root / "results.json"
    if root.exists() and not root.is_dir():
        raise FedriskError("--out", f"{root} is a file", "give a directory (new or empty) for the results")
    if root.exists() and any(root.iterdir()):
        if force and (root / "run.json").exists():
            shutil.rmtree(root)  # only ever a fedrisk results directory: --force must not wipe anything else
        elif force:
            raise FedriskError("--out", f"{root} is not empty and is not a fedrisk run", "choose an empty directory")
        else:
            run_file = root / "run.json"
            if results.exists() and json.loads(results.read_text()).get("complete"):
                raise FedriskError(
                    "--out", f"{root} already holds a complete run", "choose another --out, or pass --force to redo it"
                )
            if not run_file.exists():
                raise FedriskError("--out", f"{root} is not empty and is not a fedrisk run", "choose an empty directory")
            if json.loads(run_file.read_text()).get("fingerprint") != print_:
                raise FedriskError(
                    "--out",
                    f"{root} holds an unfinished run of a different config",
                    "resume it with the same config and --set options, choose another --out, or pass --force",
                )
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "run.json").exists():
        atomic_write_json(
            root / "run.json",
            {"fedrisk_version": __version__, "fingerprint": print_, "started": _now(), "config": dump},
        )
    results.unlink(missing_ok=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


ProgressCallback = Callable[[str, int, list[str]], None]


def run_experiment(
    config: ExperimentConfig,
    raw: dict,
    root: Path,
    *,
    force: bool = False,
    methods: tuple[str, ...] = METHODS,
    on_unit_done: ProgressCallback | None = None,
) -> dict:
    """Run (or resume) every unit, then write metrics.csv, history.csv and results.json."""
    start = time.perf_counter()
    if config.data.source == "tables":
        # bad tables fail here, in one line, before a results directory exists (workers re-read them)
        resolve_topology(config, build_parties(config, config.seeds[0]))
    if config.evaluation.reference_models and methods == METHODS:
        from fedrisk.baselines import REFERENCE_MODELS

        methods = METHODS + REFERENCE_MODELS
    prepare_output(root, config, force)
    points = sweep_points(config, raw)
    jobs = [(point_label(a), a, cfg, seed) for a, cfg in points for seed in cfg.seeds]
    workers = min(config.runner.workers, len(jobs))
    if config.federation.backend == "ray":
        workers = 1  # Ray already uses both cores
    if workers <= 1:
        for label, _, cfg, seed in jobs:
            ran = run_unit(cfg, label, seed, root, methods)
            if on_unit_done:
                on_unit_done(label, seed, ran)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_unit, cfg, label, seed, root, methods): (label, seed) for label, _, cfg, seed in jobs}
            try:
                for future in as_completed(futures):
                    ran = future.result()
                    if on_unit_done:
                        on_unit_done(*futures[future], ran)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return finalize(root, config, points, methods, time.perf_counter() - start)


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
                    out.setdefault(label, {}).setdefault(name, {})[f"seed={seed}"] = json.loads(path.read_text())
    return out


def finalize(root: Path, config: ExperimentConfig, points, methods: tuple[str, ...], session_seconds: float) -> dict:
    units = load_units(root, points, methods)
    audit_names = config.audit.enabled()
    audits = load_audits(root, points, audit_names)
    complete = all(set(methods) <= set(u.outcomes) for u in units) and all(
        len(audits.get(point_label(a), {}).get(name, {})) == len(cfg.seeds)
        for a, cfg in points
        for name in audit_names
    )
    rows = [row for u in units for row in metric_rows(u, config.evaluation.approval_rate)]
    atomic_write_bytes(root / "metrics.csv", pd.DataFrame(rows).to_csv(index=False).encode())
    history = [
        {"point": u.point, "seed": u.seed, "method": m, **row}
        for u in units
        for m, o in u.outcomes.items()
        for row in o.history
    ]
    atomic_write_bytes(root / "history.csv", pd.DataFrame(history).to_csv(index=False).encode())
    topology = _topology_of(config, units)
    sweep = []
    for assignment, cfg in points:
        label = point_label(assignment)
        point_units = [u for u in units if u.point == label]
        summary = summarize_point(
            point_units, methods, cfg.evaluation.n_bootstrap, cfg.evaluation.ci_level, cfg.evaluation.approval_rate
        )
        summary["cost"] = _cost(point_units)
        sweep.append({"point": label, "assignment": assignment, **summary})
    head = sweep[0]
    results = {
        "fedrisk_version": __version__,
        "name": config.name,
        "config": config.model_dump(mode="json"),
        "topology": topology,
        "seeds": list(config.seeds),
        "methods": head["methods"],
        "uplift": head["uplift"],
        "parties": head["parties"],
        "cost": {**head["cost"], "session_wall_seconds": session_seconds},
        "sweep": sweep if config.sweep else [],
        "audits": audits.get(head["point"], {}) if not config.sweep else audits,
        "finished": _now(),
        "complete": complete,
    }
    atomic_write_json(root / "results.json", results)
    return results


def _topology_of(config: ExperimentConfig, units: list[Unit]) -> str:
    if config.topology != "auto":
        return config.topology
    for unit in units:
        for outcome in unit.outcomes.values():
            parties = {key.split("/", 1)[0] for key in outcome.scores}
            return "horizontal" if len(parties) > 1 else "vertical"
    return "vertical"


def _cost(units: list[Unit]) -> dict:
    fed = [u.outcomes["federated"].cost for u in units if "federated" in u.outcomes]
    all_costs = [o.cost for u in units for o in u.outcomes.values()]
    epsilons = [c.get("epsilon") for c in fed if c.get("epsilon") is not None]
    return {
        "wall_seconds": float(sum(c.get("wall_seconds", 0.0) for c in all_costs)),
        "federated_wall_seconds": float(np.mean([c.get("wall_seconds", 0.0) for c in fed])) if fed else None,
        "bytes_sent": int(np.mean([c.get("bytes_sent", 0) for c in fed])) if fed else 0,
        "epsilon": float(max(epsilons)) if epsilons else None,
        "delta": next((c.get("delta") for c in fed if c.get("delta") is not None), None),
    }
