"""model.kind = "gbdt", horizontal: banks' summed histograms on Flower against pooled and own-bank xgboost."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from fedrisk.config import validate
from fedrisk.core.metrics import ks_statistic
from fedrisk.data.setting import build_setting
from fedrisk.methods.registry import run_method


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
