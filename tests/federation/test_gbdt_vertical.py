"""model.kind = "gbdt", vertical: SecureBoost over Flower equals the pooled xgboost baseline; config rules."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fedrisk.config import validate
from fedrisk.core.errors import FedriskError
from fedrisk.core.metrics import ks_statistic
from fedrisk.data.outcome import ScoreKey
from fedrisk.data.setting import build_setting
from fedrisk.methods.registry import run_method


def _config(n_firms: int = 4000, **federation):
    return validate(
        {
            "topology": "vertical",
            "seeds": [0],
            "world": {"n_firms": n_firms},
            "model": {"kind": "gbdt", "n_trees": 25, "max_depth": 3},
            "federation": {"vertical": {"psi_parallel": False, **federation}},
        }
    )


def test_vertical_gbdt_federated_equals_centralized_and_beats_siloed(tmp_path):
    config = _config(n_firms=10_000)
    setting = build_setting(config, 0)
    out = {m: run_method(m, config, setting, 0, tmp_path / m) for m in ("siloed", "centralized", "federated")}
    key = ScoreKey(setting.label_holders[0], "test")
    fed, cen, sil = (out[m].scores[key] for m in ("federated", "centralized", "siloed"))
    np.testing.assert_array_equal(fed.ids, cen.ids)
    assert np.max(np.abs(fed.p - cen.p)) < 1e-5  # our trees on Flower == xgboost on the pooled join
    ks = {m: ks_statistic(s.y, s.p) for m, s in (("federated", fed), ("centralized", cen), ("siloed", sil))}
    assert abs(ks["federated"] - ks["centralized"]) < 0.01
    # fixed seed, ~1700 test applicants (~100 defaults): the partners' columns carry signal (AUC agrees)
    assert ks["federated"] > ks["siloed"] and roc_auc_score(fed.y, fed.p) > roc_auc_score(sil.y, sil.p)
    cost = out["federated"].cost
    assert cost["bytes_sent"] > 0 and cost["trees"] == out["centralized"].cost["trees"]
    importance = out["federated"].extra["importance"]
    assert set(importance) == set(setting.parties) and abs(sum(importance.values()) - 1) < 1e-9
    assert importance == pytest.approx(out["centralized"].extra["importance"], abs=1e-4)
    assert fed.segments and any(k.startswith("covered_by_") for k in fed.segments)


@pytest.mark.slow
def test_vertical_gbdt_under_paillier_equals_the_clear_run(tmp_path):
    clear = _config()
    encrypted = _config(protection="he", he_scheme="paillier", he_key_bits=1024)
    clear.model.n_trees = encrypted.model.n_trees = 3
    setting = build_setting(clear, 0)
    a = run_method("federated", clear, setting, 0, tmp_path / "clear")
    b = run_method("federated", encrypted, setting, 0, tmp_path / "he")
    key = next(iter(a.scores))
    np.testing.assert_array_equal(a.scores[key].p, b.scores[key].p)
    assert b.cost["encrypt_seconds_per_tree"] > 0 and b.cost["bytes_per_tree"] > 2 * a.cost["bytes_per_tree"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"model": {"kind": "gbdt", "hidden": [8]}}, "model.hidden"),
        ({"model": {"kind": "logistic", "n_trees": 10}}, "model.n_trees"),
        (
            {"model": {"kind": "gbdt"}, "federation": {"vertical": {"protection": "he"}}},
            "federation.vertical.he_scheme",
        ),
        ({"model": {"kind": "gbdt", "max_bins": 1}}, "model.max_bins"),
        ({"model": {"kind": "gbdt"}, "training": {"epochs": 12}}, "training.epochs"),
    ],
)
def test_gbdt_keys_are_honoured_or_refused_by_name(data, field):
    with pytest.raises(FedriskError) as caught:
        validate({"topology": "vertical", **data})
    assert caught.value.field == field


def test_too_many_categorical_levels_are_refused_before_any_output():
    from fedrisk.methods.registry import preflight

    config = validate(
        {"topology": "vertical", "world": {"n_firms": 2000}, "model": {"kind": "gbdt", "max_bins": 16}}
    )
    with pytest.raises(FedriskError) as caught:
        preflight(config)  # the synthetic bank's 'province' has 31 levels
    assert caught.value.field == "model.max_bins" and "province" in str(caught.value)
