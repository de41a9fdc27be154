"""Personalised horizontal federation: the pieces (coordinates, calibration, CV fine-tuning, clustering) and
one small end-to-end run through the method ``personalized``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fedrisk.config import validate
from fedrisk.config.model import TrainConfig
from fedrisk.config.personalization import PersonalConfig
from fedrisk.core.errors import FedriskError
from fedrisk.data.setting import build_setting
from fedrisk.federation.personalization_server import cluster_banks
from fedrisk.methods.personalized import PersonalizationFallback
from fedrisk.methods.registry import methods_for, preflight, run_method
from fedrisk.models.finetune import change_coordinates, choose_epochs, fine_tune, recalibrate
from fedrisk.models.nets import make_model
from fedrisk.models.training import predict_logits, seed_torch


def _logits(model, X):
    return predict_logits(model, X.astype(np.float32))


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_change_of_coordinates_keeps_every_prediction(kind):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    scale, offset = rng.uniform(0.2, 3.0, 5), rng.normal(size=5)
    seed_torch(1)
    model = make_model(kind, 5, [8, 4])
    moved = change_coordinates(model, scale, offset)
    X_own = (X - offset) / scale  # the same rows in the new coordinates
    np.testing.assert_allclose(_logits(moved, X_own), _logits(model, X), atol=1e-4)


def test_recalibration_keeps_the_ranking_and_matches_the_bad_rate():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3000, 3)).astype(np.float32)
    y = (rng.random(3000) < 1 / (1 + np.exp(-(X[:, 0] - 3.0)))).astype(np.float32)  # bad rate about 7%
    seed_torch(0)
    model = make_model("logistic", 3)
    with torch.no_grad():  # a model that ranks well but thinks every second firm defaults
        model.linear.weight[:] = torch.tensor([[0.3, 0.0, 0.0]])
        model.linear.bias[:] = 0.0
    fixed = recalibrate(model, X, y)
    before, after = _logits(model, X), _logits(fixed, X)
    assert roc_auc_score(y, after) == pytest.approx(roc_auc_score(y, before), abs=1e-12)
    p = 1 / (1 + np.exp(-after))
    assert abs(p.mean() - y.mean()) < 0.005 and abs(1 / (1 + np.exp(-before)).mean() - 0.5) < 0.05


def _bank(rng, n, w):
    X = rng.normal(size=(n, len(w))).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w - 2.0)))).astype(np.float32)
    return X, y


def test_cross_validated_fine_tuning_adapts_only_where_the_bank_differs():
    rng = np.random.default_rng(3)
    w_global = np.array([1.0, 1.0, 0.0, 0.0])
    seed_torch(0)
    global_model = make_model("logistic", 4)
    with torch.no_grad():
        global_model.linear.weight[:] = torch.tensor(w_global, dtype=torch.float32)[None, :]
        global_model.linear.bias[:] = -2.0
    cfg = TrainConfig(epochs=8, batch_size=500, lr=0.1, patience=3)
    # a bank whose credit policy differs (the second field predicts the other way, a third one matters)
    X, y = _bank(rng, 3000, np.array([1.0, -1.0, 1.0, 0.0]))
    X_test, y_test = _bank(rng, 3000, np.array([1.0, -1.0, 1.0, 0.0]))
    choice = choose_epochs(global_model, X, y, cfg, folds=3, seed=0)
    assert choice.epochs > 0 and choice.curve[choice.epochs] < choice.curve[0] - 0.05
    tuned = fine_tune(global_model, X, y, cfg, choice.epochs, seed=0)
    gain = roc_auc_score(y_test, _logits(tuned, X_test)) - roc_auc_score(
        y_test, _logits(global_model, X_test)
    )
    assert gain > 0.1
    # a bank that follows the global model: fine-tuning (if any) does no harm
    X, y = _bank(rng, 3000, w_global)
    X_test, y_test = _bank(rng, 3000, w_global)
    choice = choose_epochs(global_model, X, y, cfg, folds=3, seed=0)
    tuned = fine_tune(global_model, X, y, cfg, choice.epochs, seed=0)
    change = roc_auc_score(y_test, _logits(tuned, X_test)) - roc_auc_score(
        y_test, _logits(global_model, X_test)
    )
    assert abs(change) < 0.01


def test_banks_cluster_by_the_direction_of_their_updates():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=30), rng.normal(size=30)
    updates = {n: (a if n < 4 else b) + 0.2 * rng.normal(size=30) for n in range(8)}
    labels, silhouette = cluster_banks(updates, PersonalConfig())
    assert silhouette is not None and silhouette > 0.5
    assert len({labels[n] for n in range(4)}) == 1 and len({labels[n] for n in range(4, 8)}) == 1
    assert labels[0] != labels[7]
    alike = {n: a + 0.2 * rng.normal(size=30) for n in range(6)}
    assert set(cluster_banks(alike, PersonalConfig())[0].values()) == {0}  # no clear split: one cluster
    # a fixed number of clusters is honoured; max_clusters = 1 never splits
    assert len(set(cluster_banks(alike, PersonalConfig(clusters=2))[0].values())) == 2
    assert set(cluster_banks(updates, PersonalConfig(max_clusters=1))[0].values()) == {0}


def _small_config(mode: str, **personal) -> dict:
    return {
        "seeds": [0],
        "world": {
            "n_firms": 6000,
            "n_banks": 3,
            "banks": {"size_concentration": 1e3, "concept_shift": 1.0, "profile_seed": 1},
        },
        "training": {"batch_size": 256, "epochs": 5},
        "federation": {
            "horizontal": {
                "rounds": 2,
                "personalization": mode,
                "personal": {"epochs": 4, "folds": 3, **personal},
            }
        },
    }


@pytest.mark.parametrize("mode", ["finetune", "clustered"])
def test_personalized_method_scores_every_bank_and_reports_its_choice(tmp_path, mode):
    config = validate(_small_config(mode))
    assert "personalized" in methods_for(config)
    setting = build_setting(config, seed=0)
    outcome = run_method("personalized", config, setting, 0, tmp_path)
    assert outcome.method == "personalized"
    assert {(k.party, k.split) for k in outcome.scores} == {
        (b, s) for b in setting.label_holders for s in ("val", "test", "oot")
    }
    for key, scored in outcome.scores.items():
        np.testing.assert_array_equal(scored.ids, setting.splits[key.party][key.split])
        assert np.all((scored.p > 0) & (scored.p < 1))
    report = outcome.extra["personalization"]
    assert report["mode"] == mode and set(report["banks"]) == set(setting.label_holders)
    assert all(r["model"] in ("personal", "recalibrated", "global") for r in report["banks"].values())
    assert outcome.cost["bytes_sent"] > 0


def test_a_bank_with_too_few_defaults_is_named_and_keeps_the_global_model(tmp_path):
    config = validate(_small_config("finetune", min_defaults=10_000))
    setting = build_setting(config, seed=0)
    with pytest.warns(PersonalizationFallback, match="bank_1 keeps the global model"):
        outcome = run_method("personalized", config, setting, 0, tmp_path)
    reports = outcome.extra["personalization"]["banks"]
    assert all(r["model"] == "global" and "defaults" in r["fallback"] for r in reports.values())


def test_personalization_that_does_not_apply_is_rejected_before_work_starts():
    vertical = validate({"federation": {"horizontal": {"personalization": "finetune"}}})
    with pytest.raises(FedriskError, match="federation.horizontal.personalization.*vertical"):
        preflight(vertical)
    with pytest.raises(FedriskError, match="federation.horizontal.personalization"):
        validate({"federation": {"horizontal": {"personalization": "fedsomething"}}})
    with pytest.raises(FedriskError, match="clustered"):
        validate(
            {"federation": {"horizontal": {"personalization": "clustered", "secagg": {"enabled": True}}}}
        )
    trees = {k: v for k, v in _small_config("ditto").items() if k != "training"}  # refused with trees
    ditto_trees = validate(trees | {"model": {"kind": "gbdt"}})
    with pytest.raises(FedriskError, match="gbdt"):
        preflight(ditto_trees)
