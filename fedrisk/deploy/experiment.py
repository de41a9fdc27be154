"""An experiment whose federated method runs on Flower's deployment engine, written like ``fedrisk run``.

Why not a separate pipeline: the results must be comparable with the simulation's line for line, so the
runner's own loop (`fedrisk.runner.loop.run_units`) does the work with the deployment engine as the federated
method's transport, and `finalize` writes the summary. The
results directory is the same as ``fedrisk run`` writes (``results.json``, ``metrics.csv``, units), plus:

- ``simulation/units/...``: the federated method again, in-process, on the same setting (``compare``);
- ``deployment.json``: how the deployment ran (runs, ports, TLS, SuperNode auth, seconds) and, per seed
  and test split, KS/AUC of deployment vs simulation and the largest score difference.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fedrisk.config.experiment import ExperimentConfig
from fedrisk.config.sweep import point_label
from fedrisk.core.jsonio import atomic_write_json
from fedrisk.core.metrics import credit_metrics
from fedrisk.data.outcome import MethodOutcome
from fedrisk.data.setting import Setting, coverage_segments
from fedrisk.evaluation.results import finalize
from fedrisk.methods.registry import METHODS, preflight
from fedrisk.runner.loop import run_units
from fedrisk.runner.units import load_outcome, unit_dir

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

    The runner's own loop does the work, with the engine as the federated method's transport; with
    ``compare`` the same loop runs the federated method again in-process into ``root/simulation``.
    Returns the ``deployment.json`` content. ``root`` is made absolute: the apps run in other processes.
    """
    root = Path(root).resolve()
    started = time.perf_counter()
    preflight(config)
    points = run_units(config, raw, root, force=force, methods=METHODS, backend=engine)
    comparison = []
    if compare:
        sim_root = root / SIMULATION_DIR
        run_units(config, raw, sim_root, methods=("federated",), backend="inprocess")
        for assignment, cfg in points:
            label = point_label(assignment)
            for seed in cfg.seeds:
                deployed = load_outcome(unit_dir(root, label, seed), "federated")
                simulated = load_outcome(unit_dir(sim_root, label, seed), "federated")
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
