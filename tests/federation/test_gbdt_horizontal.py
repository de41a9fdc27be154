"""model.kind = "gbdt", horizontal: banks' summed histograms on Flower against pooled and own-bank xgboost."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fedrisk.config import validate
from fedrisk.core.errors import FedriskError
from fedrisk.core.metrics import ks_statistic
from fedrisk.data.setting import build_setting
from fedrisk.methods.registry import preflight, run_method


def test_horizontal_gbdt_tracks_pooled_and_beats_the_banks_alone(tmp_path):
    config = validate(
        {
            "topology": "horizontal",
            "seeds": [0],
            "world": {"n_firms": 8000, "n_banks": 3},
            "model": {"kind": "gbdt", "n_trees": 20, "max_depth": 3},
        }
    )
    setting = build_setting(config, 0)
    out = {m: run_method(m, config, setting, 0, tmp_path / m) for m in ("siloed", "centralized", "federated")}
    keys = sorted(out["federated"].scores)
    assert {k.party for k in keys} == set(setting.label_holders)

    def mean(metric, method):
        return np.mean([metric(out[method].scores[k].y, out[method].scores[k].p) for k in keys])

    # lossless up to the agreed bins (merged bank summaries vs xgboost's pooled sketch)
    assert abs(mean(ks_statistic, "federated") - mean(ks_statistic, "centralized")) < 0.02
    assert abs(mean(roc_auc_score, "federated") - mean(roc_auc_score, "centralized")) < 0.01
    assert mean(roc_auc_score, "federated") > mean(roc_auc_score, "siloed")
    cost = out["federated"].cost
    assert cost["bytes_sent"] > 0 and cost["trees"] >= 1 and cost["seconds_per_tree"] > 0


@pytest.mark.parametrize(
    ("horizontal", "key"),
    [
        ({"secagg": {"enabled": True}}, "federation.horizontal.secagg"),
        ({"dp": {"mode": "server-fixed", "noise_multiplier": 1.0}}, "federation.horizontal.dp"),
        ({"strategy": "fedprox", "strategy_params": {"proximal_mu": 0.1}}, "federation.horizontal.strategy"),
        ({"rounds": 5}, "federation.horizontal.rounds"),
    ],
)
def test_neural_federation_keys_are_refused_with_trees_not_ignored(horizontal, key):
    """A user who asks for SecAgg+ or DP on trees must not believe the histograms are protected."""
    trees = {"topology": "horizontal", "world": {"n_banks": 3, "n_firms": 2000}, "model": {"kind": "gbdt"}}
    preflight(validate(trees | {"federation": {"horizontal": {"personalization": "finetune"}}}))
    with pytest.raises(FedriskError) as err:
        preflight(validate(trees | {"federation": {"horizontal": horizontal}}))
    assert str(err.value).startswith(f"{key}:") and "model.kind = 'logistic' / 'mlp'" in str(err.value)
