"""Every method gets the same (lr, weight decay) grid and keeps the candidate with the lowest validation loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fedrisk  # noqa: F401 - Flower's environment first
from fedrisk.config import validate
from fedrisk.config.model import TrainConfig
from fedrisk.data.setting import build_setting
from fedrisk.methods.registry import run_method
from fedrisk.methods.tuning import best_validation_loss

SMALL = {
    "seeds": [0],
    "world": {"n_firms": 3000},
    "training": {"epochs": 3, "patience": 0, "batch_size": 256},
    "federation": {"vertical": {"psi_parallel": False}},
}


def _config(**training):
    raw = {**SMALL, "training": {**SMALL["training"], **training}}
    return validate(raw)


def test_grid_is_every_pair_or_the_single_setting():
    assert TrainConfig().grid() == [(0.01, 1e-4)]
    grid = TrainConfig(lr_grid=[0.01, 0.1], weight_decay_grid=[0.0, 1e-3]).grid()
    assert grid == [(0.01, 0.0), (0.01, 1e-3), (0.1, 0.0), (0.1, 1e-3)]


@pytest.mark.parametrize("method", ["siloed", "centralized"])
def test_method_tries_the_grid_and_keeps_the_lowest_validation_loss(method: str, tmp_path: Path):
    cfg = _config(lr_grid=[1e-4, 0.05], weight_decay_grid=[0.0, 0.5])
    setting = build_setting(cfg, 0)
    out = run_method(method, cfg, setting, 0, tmp_path / "grid")
    trials = out.extra["tuning"]["trials"]
    assert [(t["lr"], t["weight_decay"]) for t in trials] == cfg.training.grid()
    best = min(trials, key=lambda t: t["val_loss"])
    assert out.extra["tuning"]["chosen"] == {"lr": best["lr"], "weight_decay": best["weight_decay"]}
    assert best_validation_loss(out) == pytest.approx(best["val_loss"])
    assert best["lr"] == 0.05  # 3 epochs at lr 1e-4 barely move the model
    # the kept run is the plain run at the chosen setting, and the cost counts every attempt
    plain = run_method(
        method, _config(lr=best["lr"], weight_decay=best["weight_decay"]), setting, 0, tmp_path / "p"
    )
    key = next(k for k in out.scores if k.split == "test")
    assert np.array_equal(out.scores[key].p, plain.scores[key].p)
    assert out.cost["wall_seconds"] > plain.cost["wall_seconds"]


def test_reference_models_and_untuned_runs_are_left_alone(tmp_path: Path):
    cfg = _config()
    setting = build_setting(cfg, 0)
    assert "tuning" not in run_method("siloed", cfg, setting, 0, tmp_path / "a").extra
    tuned = _config(lr_grid=[0.01, 0.05])
    assert "tuning" not in run_method("pooled_sklearn_lr", tuned, setting, 0, tmp_path / "b").extra


@pytest.mark.slow
def test_federated_tries_the_same_grid_and_pays_for_it(tmp_path: Path):
    cfg = _config(lr_grid=[1e-4, 0.05])
    setting = build_setting(cfg, 0)
    out = run_method("federated", cfg, setting, 0, tmp_path / "fed")
    twin = run_method("centralized", cfg, setting, 0, tmp_path / "twin")
    assert out.extra["tuning"]["chosen"] == twin.extra["tuning"]["chosen"]
    single = run_method("federated", _config(lr=0.05), setting, 0, tmp_path / "one")
    assert out.cost["bytes_sent"] > single.cost["bytes_sent"]
