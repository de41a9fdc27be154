"""The same small tuning budget for every method: a grid over learning rate and weight decay.

``training.lr_grid`` / ``training.weight_decay_grid`` (empty by default: no tuning, no extra cost). When
set, siloed, centralized and federated each train once per (lr, weight decay) pair and keep the run with
the lowest validation loss, so no method is compared against a better-tuned one: centralized is an upper
bound because it sees all the data, not because it got more attempts. The federated method pays for its
attempts (their seconds and bytes are added to its cost). scikit-learn's reference models and the gbdt
methods keep their own settings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedrisk.config import ExperimentConfig
from fedrisk.data.outcome import MethodOutcome
from fedrisk.data.setting import Setting

TUNED = ("siloed", "centralized", "federated")
"""Methods that share the grid (the ones trained by fedrisk's own training routine)."""

Runner = Callable[[str, ExperimentConfig, Setting, int, Path, Any], MethodOutcome]


def best_validation_loss(outcome: MethodOutcome) -> float:
    """Lowest validation loss in the history (mean over parties when each bank trains its own model)."""
    per_party: dict[str, list[float]] = {}
    for row in outcome.history:
        loss = row.get("val_loss")
        if loss is not None and np.isfinite(loss):
            per_party.setdefault(str(row.get("party", "")), []).append(float(loss))
    return float(np.mean([min(v) for v in per_party.values()])) if per_party else float("inf")


def needs_tuning(method: str, config: ExperimentConfig) -> bool:
    return method in TUNED and config.model.kind != "gbdt" and len(config.training.grid()) > 1


def tuned(
    run: Runner,
    method: str,
    config: ExperimentConfig,
    setting: Setting,
    seed: int,
    workdir: Path,
    backend: Any = None,
) -> MethodOutcome:
    """Run ``method`` once per grid point; return the outcome with the lowest validation loss.

    ``extra["tuning"]`` lists every candidate's validation loss and the one kept; ``cost`` adds up the
    seconds and bytes of every attempt (what tuning a federated model really costs).
    """
    trials, best, best_loss = [], None, float("inf")
    seconds, sent = 0.0, 0
    for index, (lr, weight_decay) in enumerate(config.training.grid()):
        fixed = {"lr": lr, "weight_decay": weight_decay, "lr_grid": [], "weight_decay_grid": []}
        training = config.training.model_copy(update=fixed)
        candidate = config.model_copy(update={"training": training})
        outcome = run(method, candidate, setting, seed, workdir / f"tune{index}", backend)
        loss = best_validation_loss(outcome)
        trials.append({"lr": lr, "weight_decay": weight_decay, "val_loss": loss})
        seconds += float(outcome.cost.get("wall_seconds", 0.0))
        sent += int(outcome.cost.get("bytes_sent", 0) or 0)
        if best is None or loss < best_loss:
            best, best_loss = outcome, loss
    assert best is not None
    chosen = min(trials, key=lambda t: t["val_loss"])
    best.extra = {
        **best.extra,
        "tuning": {"trials": trials, "chosen": {k: chosen[k] for k in ("lr", "weight_decay")}},
    }
    best.cost = {**best.cost, "wall_seconds": seconds, "bytes_sent": sent}
    return best
