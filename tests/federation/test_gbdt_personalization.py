"""Personalised gradient boosting: each bank's own trees boosted on top of the federated ones."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fedrisk.config import validate
from fedrisk.core.errors import FedriskError
from fedrisk.data.setting import build_setting
from fedrisk.methods.personalized import PersonalizationFallback
from fedrisk.methods.registry import methods_for, preflight, run_method
from fedrisk.models.gbdt import GBDTParams
from fedrisk.models.gbdt.personal import boost_on_top

PARAMS = GBDTParams(n_trees=60, max_depth=3, learning_rate=0.1, early_stopping_rounds=10)


def _bank(n: int, local_effect: float, seed: int):
    """Rows whose default depends on x0 (what the federation learnt) and, at this bank, also on x1."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    global_margin = (1.2 * X[:, 0] - 1.5).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-(global_margin + local_effect * X[:, 1])))).astype(np.float32)
    return X, y, global_margin


def _split(X, y, m, n_fit):
    return (X[:n_fit], y[:n_fit], m[:n_fit]), (X[n_fit:], y[n_fit:], m[n_fit:])


def test_local_trees_learn_what_the_bank_differs_in():
    (X, y, m), (Xt, yt, mt) = _split(*_bank(8000, local_effect=1.0, seed=0), 4000)
    local = boost_on_top(X, y, m, PARAMS, max_trees=60, folds=5, patience=10, select="auc", seed=0)
    assert local.n_trees > 0 and local.cv_score_personal < local.cv_score_global
    auc_global = roc_auc_score(yt, mt)
    auc_personal = roc_auc_score(yt, local.predict_proba(Xt, mt))
    assert auc_personal > auc_global + 0.05  # x1 is worth ~0.1 AUC here


def test_where_the_federated_model_is_right_local_trees_do_not_hurt():
    (X, y, m), (Xt, yt, mt) = _split(*_bank(6000, local_effect=0.0, seed=1), 3000)
    local = boost_on_top(X, y, m, PARAMS, max_trees=60, folds=5, patience=10, select="loss", seed=1)
    auc_global = roc_auc_score(yt, mt)
    auc_personal = roc_auc_score(yt, local.predict_proba(Xt, mt))
    assert auc_personal > auc_global - 0.01
    if local.n_trees == 0:  # kept the federated model: its probabilities exactly
        np.testing.assert_allclose(local.predict_proba(Xt, mt), 1 / (1 + np.exp(-mt.astype(np.float64))))


def _config(**personal) -> dict:
    return {
        "seeds": [0],
        "world": {
            "n_firms": 6000,
            "n_banks": 3,
            "banks": {"size_concentration": 1e3, "concept_shift": 1.0, "profile_seed": 1},
        },
        "model": {"kind": "gbdt", "n_trees": 20, "max_depth": 3},
        "federation": {"horizontal": {"personalization": "finetune", "personal": {"folds": 3, **personal}}},
    }


def test_personalized_trees_score_every_bank_and_report_their_choice(tmp_path):
    config = validate(_config())
    preflight(config)
    assert "personalized" in methods_for(config)
    setting = build_setting(config, seed=0)
    outcome = run_method("personalized", config, setting, 0, tmp_path / "p")
    report = outcome.extra["personalization"]
    assert set(report["banks"]) == set(setting.label_holders)
    assert all(r["model"] in ("personal", "global") for r in report["banks"].values())
    for bank in setting.label_holders:
        scored = outcome.scores[(bank, "test")]
        assert len(scored.ids) > 0 and np.all((scored.p > 0) & (scored.p < 1))
    assert outcome.cost["bytes_sent"] > 0 and outcome.cost["trees"] >= 1


def test_a_bank_that_cannot_personalise_scores_exactly_as_the_federated_trees(tmp_path):
    config = validate(_config(min_defaults=100_000))
    setting = build_setting(config, seed=0)
    with pytest.warns(PersonalizationFallback, match="keeps the global model"):
        personal = run_method("personalized", config, setting, 0, tmp_path / "p")
    federated = run_method("federated", config, setting, 0, tmp_path / "f")
    assert all("defaults" in r["fallback"] for r in personal.extra["personalization"]["banks"].values())
    for key, scored in federated.scores.items():
        np.testing.assert_allclose(personal.scores[key].p, scored.p, rtol=1e-6)


def test_tree_personalisation_refuses_what_does_not_apply():
    for mode in ("ditto", "clustered"):
        with pytest.raises(FedriskError, match="use 'finetune' with model.kind = 'gbdt'"):
            preflight(validate(_config() | {"federation": {"horizontal": {"personalization": mode}}}))
    with pytest.raises(FedriskError, match="personal.epochs") as err:
        preflight(validate(_config(epochs=12)))
    assert "model.n_trees" in str(err.value)
