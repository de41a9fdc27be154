"""Results directories for the report tests, built with the runner's own writers (save_outcome + finalize)
from random scores, so the report tests do not depend on the federation code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedrisk.config.experiment import ExperimentConfig
from fedrisk.config.sweep import point_label
from fedrisk.core.jsonio import atomic_write_json, fingerprint
from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey
from fedrisk.evaluation.results import finalize
from fedrisk.methods.registry import METHODS
from fedrisk.report.build import build_report
from fedrisk.runner.units import save_outcome, unit_dir

STRENGTH = {"siloed": 0.8, "federated": 1.4, "centralized": 1.8}
EPS_KEY = "federation.horizontal.dp.target_epsilon"


def _outcome(method: str, banks: dict[str, int], seed: int, vertical: bool, epsilon) -> MethodOutcome:
    """Scores whose separation grows siloed < federated < centralized; same applicants for every method."""
    scores = {}
    for b, (bank, n) in enumerate(banks.items()):
        rng = np.random.default_rng(1000 * seed + b)
        y = (rng.random(n) < 0.12).astype(np.int8)
        ids = np.array([f"{bank}-{i}" for i in range(n)])
        noise = np.random.default_rng([seed, b, METHODS.index(method)]).normal(size=n)
        strength = STRENGTH[method] * (epsilon / (epsilon + 2) if method == "federated" and epsilon else 1.0)
        p = 1 / (1 + np.exp(-(strength * y + noise - 2)))
        segments = {}
        if vertical:
            for partner, share in (("tax", 0.6), ("supply_chain", 0.35)):
                covered = np.random.default_rng(seed + len(partner)).random(n) < share
                segments[f"covered_by_{partner}"] = covered
                segments[f"uncovered_by_{partner}"] = ~covered
        scores[ScoreKey(bank, "test")] = ScoredSet(ids, y, p, segments)
    step = "round" if method == "federated" else "epoch"
    history = []
    for party in banks if (method == "siloed" and not vertical) else [None]:
        for i in range(1, 6):
            row = {step: i, "train_loss": 0.5 / i + 0.01 * seed, "val_loss": 0.55 / i + 0.02 * seed}
            history.append({"party": party, **row} if party else row)
    cost = {"wall_seconds": 3.0, "bytes_sent": 0, "epsilon": None}
    if method == "federated":
        cost = {
            "wall_seconds": 7.5,
            "bytes_sent": 2_345_678,
            "epsilon": epsilon,
            "delta": 1e-5 if epsilon else None,
        }
    return MethodOutcome(method, scores, history=history, cost=cost)


def _make_run(root: Path, *, vertical: bool, sweep: dict, drop: tuple[str, int] | None = None) -> Path:
    banks = {"bank": 400} if vertical else {"bank_1": 400, "bank_2": 120, "bank_3": 240}
    config = ExperimentConfig(
        name="unit-vertical" if vertical else "unit-horizontal",
        topology="vertical" if vertical else "horizontal",
        seeds=[0, 1],
        world={"n_firms": 2000, "n_banks": len(banks)},
        evaluation={"n_bootstrap": 20},
        sweep=sweep,
    )
    keys = list(sweep)
    assignments = [dict(zip(keys, values, strict=True)) for values in zip(*sweep.values(), strict=True)] or [
        {}
    ]
    dump = config.model_dump(mode="json")
    atomic_write_json(root / "run.json", {"fingerprint": fingerprint(dump), "config": dump})
    for assignment in assignments:
        for seed in config.seeds:
            for method in METHODS:
                if drop == (method, seed):
                    continue
                eps = assignment.get(EPS_KEY)
                eps = None if eps in (None, "inf") else float(eps)
                save_outcome(
                    unit_dir(root, point_label(assignment), seed),
                    _outcome(method, banks, seed, vertical, eps),
                )
    finalize(root, config, [(a, config) for a in assignments], METHODS, 12.0)
    return root


@pytest.fixture(scope="session")
def vertical_dir(tmp_path_factory) -> Path:
    root = _make_run(
        tmp_path_factory.mktemp("vertical"), vertical=True, sweep={"world.tax.coverage": [0.3, 0.7]}
    )
    build_report(root)
    return root


@pytest.fixture(scope="session")
def horizontal_dir(tmp_path_factory) -> Path:
    root = _make_run(
        tmp_path_factory.mktemp("horizontal"), vertical=False, sweep={EPS_KEY: [1.0, 8.0, "inf"]}
    )
    build_report(root)
    return root


@pytest.fixture
def make_run() -> Callable[..., Path]:
    return _make_run


@pytest.fixture
def scored() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Seed 0's siloed and federated scores of one 800-applicant bank."""
    out = _outcome("siloed", {"bank": 800}, 0, True, None).scores[("bank", "test")]
    fed = _outcome("federated", {"bank": 800}, 0, True, None).scores[("bank", "test")]
    return {"siloed": (out.y, out.p), "federated": (fed.y, fed.p)}
