"""An experiment whose federated method runs on Flower's deployment engine, written like ``fedrisk run``.

Why not a separate pipeline: the results must be comparable with the simulation's line for line, so the
runner's own pieces do the work (`build_setting`, `run_method` for the baselines, the drivers through
`fedrisk.methods.federated` with the deployment engine as backend, `save_outcome`, `finalize`). The
results directory is the same as ``fedrisk run`` writes (``results.json``, ``metrics.csv``, units), plus:

- ``simulation/units/...``: the federated method again, in-process, on the same setting (``compare``);
- ``deployment.json``: how the deployment ran (runs, ports, TLS, SuperNode auth, seconds) and, per seed
  and test split, KS/AUC of deployment vs simulation and the largest score difference.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from fedrisk.config.experiment import ExperimentConfig, point_label, sweep_points
from fedrisk.core.jsonio import atomic_write_json
from fedrisk.core.metrics import credit_metrics
from fedrisk.data.outcome import MethodOutcome
from fedrisk.data.setting import Setting, build_setting, coverage_segments
from fedrisk.evaluation.results import finalize
from fedrisk.methods.registry import METHODS, run_method
from fedrisk.runner.loop import prepare_output
from fedrisk.runner.units import finished_methods, load_outcome, save_outcome, unit_dir

DEPLOYMENT_FILE = "deployment.json"
SIMULATION_DIR = "simulation"

#: A small vertical world for the loopback demo and CI: one seed, full-batch steps, a few round trips.
SMALL_VERTICAL = {
    "name": "loopback_vertical",
    "topology": "vertical",
    "seeds": [0],
    "world": {"n_firms": 3000},
    "model": {"kind": "logistic"},
    "training": {"epochs": 2, "lr": 0.05},
    "federation": {"vertical": {"full_batch": True}},
    "evaluation": {"n_bootstrap": 50},
}


def federated_outcome(
    config: ExperimentConfig, setting: Setting, seed: int, workdir: Path, backend
) -> MethodOutcome:
    """The federated method through the runner's adapters, on ``backend`` (a name or an `Engine`)."""
    from fedrisk.methods.federated import federated_horizontal, federated_vertical

    if setting.topology == "vertical":
        return federated_vertical(config, setting, seed, workdir, coverage_segments(setting), backend=backend)
    return federated_horizontal(config, setting, seed, workdir, backend=backend)


def compare_outcomes(deployed: MethodOutcome, simulated: MethodOutcome) -> dict[str, dict]:
    """Per test split: KS and AUC of both, their differences, and the largest score difference."""
    out = {}
    for key, dep in deployed.scores.items():
        sim = simulated.scores[key]
        if not np.array_equal(np.asarray(dep.ids).astype(str), np.asarray(sim.ids).astype(str)):
            raise ValueError(f"{key}: deployment and simulation scored different applicants")
        m_dep, m_sim = credit_metrics(dep.y, dep.p), credit_metrics(sim.y, sim.p)
        out[f"{key.party}/{key.split}"] = {  # a JSON report: a readable label, not parsed back
            "ks_deployment": float(m_dep["ks"]),
            "ks_simulation": float(m_sim["ks"]),
            "ks_abs_diff": abs(float(m_dep["ks"]) - float(m_sim["ks"])),
            "auc_deployment": float(m_dep["auc"]),
            "auc_simulation": float(m_sim["auc"]),
            "max_abs_score_diff": float(np.max(np.abs(np.asarray(dep.p) - np.asarray(sim.p)))),
            "n": len(dep.ids),
        }
    return out


def seconds_per_round(outcome: MethodOutcome) -> float | None:
    """Training seconds per server round (vertical: per round trip; horizontal: per strategy round)."""
    extra = outcome.extra
    if extra.get("round_trips"):
        return float(extra["train_seconds"]) / int(extra["round_trips"])
    rounds = [row for row in outcome.history if "round" in row and row.get("seconds") is not None]
    if len(rounds) >= 2:
        return (rounds[-1]["seconds"] - rounds[0]["seconds"]) / (len(rounds) - 1)
    return None


def run_experiment_on(
    engine,
    config: ExperimentConfig,
    raw: dict,
    root: Path,
    *,
    force: bool = False,
    compare: bool = True,
) -> dict:
    """Run (or resume) ``config`` with the federated method on ``engine``; write ``root`` as the runner does.

    Returns the ``deployment.json`` content. ``root`` is made absolute: the apps run in other processes.
    """
    import torch

    root = Path(root).resolve()
    started = time.perf_counter()
    prepare_output(root, config, force)
    points = sweep_points(config, raw)
    comparison = []
    for assignment, cfg in points:
        label = point_label(assignment)
        torch.set_num_threads(cfg.training.num_threads)
        for seed in cfg.seeds:
            directory = unit_dir(root, label, seed)
            sim_dir = unit_dir(root / SIMULATION_DIR, label, seed)
            todo = [m for m in METHODS if m not in finished_methods(directory)]
            need_sim = compare and "federated" not in finished_methods(sim_dir)
            if not todo and not need_sim:
                continue
            setting = build_setting(cfg, seed)
            for method in todo:
                workdir = _fresh(root / "work" / label / f"seed={seed}" / method)
                if method == "federated":
                    outcome = federated_outcome(cfg, setting, seed, workdir, engine)
                else:
                    outcome = run_method(method, cfg, setting, seed, workdir)
                save_outcome(directory, outcome)
                shutil.rmtree(workdir, ignore_errors=True)
            if need_sim:
                workdir = _fresh(root / "work" / label / f"seed={seed}" / "simulation")
                save_outcome(sim_dir, federated_outcome(cfg, setting, seed, workdir, "inprocess"))
                shutil.rmtree(workdir, ignore_errors=True)
            if compare:
                deployed, simulated = load_outcome(directory, "federated"), load_outcome(sim_dir, "federated")
                comparison.append(
                    {
                        "point": label,
                        "seed": seed,
                        "splits": compare_outcomes(deployed, simulated),
                        "seconds_per_round": {
                            "deployment": seconds_per_round(deployed),
                            "simulation": seconds_per_round(simulated),
                        },
                        "bytes_sent": {
                            "deployment": deployed.cost.get("bytes_sent"),
                            "simulation": simulated.cost.get("bytes_sent"),
                        },
                    }
                )
    results = finalize(root, config, points, METHODS, time.perf_counter() - started)
    diffs = [s["ks_abs_diff"] for c in comparison for s in c["splits"].values()]
    report = {
        "engine": repr(engine),
        "runs": [run.to_dict() for run in getattr(engine, "runs", [])],
        "comparison": comparison,
        "max_ks_abs_diff": max(diffs) if diffs else None,
        "complete": bool(results.get("complete")),
    }
    atomic_write_json(root / DEPLOYMENT_FILE, report)
    return report


def _fresh(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory
