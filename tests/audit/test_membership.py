"""Membership inference (LiRA, Carlini et al. 2022) against the methods' models, with and without DP.

The attack-must-succeed case is an MLP overfit on 100 members (a 200-firm population, 30% defaults):
over seeds 0-3 with 12 shadows the offline LiRA AUC was 0.595-0.638 and TPR at 1% FPR 2.1-3.1%; the
same models under DP-SGD (noise multiplier 2, encoder fitted off the members) gave AUC 0.527-0.576,
0.057-0.111 lower (measured with a hand-written DP-SGD at ε = 13; with Opacus, which samples at rate
1 / ceil(100 / 32) = 0.25 instead of 0.32, ε = 11.5 at δ = 1e-5). Such an ε bounds the attack only loosely,
and it shows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fedrisk  # noqa: F401 - sets Flower's environment before flwr is imported
from fedrisk.audit.label_leakage import vertical_blocks
from fedrisk.audit.membership import (
    DenseSplit,
    DPSGDConfig,
    MembershipConfig,
    attack_metrics,
    dp_sgd_train,
    lira_scores,
    membership_audit,
)
from fedrisk.config.experiment import ExperimentConfig
from fedrisk.config.model import TrainConfig
from fedrisk.data.setting import build_setting
from fedrisk.federation import privacy
from fedrisk.models import make_model
from fedrisk.models.split import make_split_model, predict_twin_logits


def test_lira_finds_planted_members_and_nothing_else():
    """Per-example Gaussian statistics: members shifted by +1 sd are found; no shift gives AUC ~ 0.5."""
    rng = np.random.default_rng(0)
    n_models, n = 17, 2000
    keep = np.stack([rng.permutation(n) < n // 2 for _ in range(n_models)])
    base = rng.normal(0.0, 3.0, size=n)  # examples differ far more than runs do: why LiRA is per-example
    for shift, low, high in ((1.0, 0.7, 1.0), (0.0, 0.45, 0.55)):
        conf = base + rng.normal(size=(n_models, n)) + shift * keep
        for variance in (True, False):
            scores = lira_scores(conf, keep, 0, fix_variance=variance)
            for kind in ("offline", "online"):
                auc = attack_metrics(keep[0], scores[kind], [0.01])["auc"]
                assert low < auc < high, (shift, variance, kind, auc)
        if shift:  # the loss threshold drowns the shift in the examples' own spread; LiRA does not
            scores = lira_scores(conf, keep, 0)
            loss = attack_metrics(keep[0], scores["loss"], [0.01])["auc"]
            assert attack_metrics(keep[0], scores["offline"], [0.01])["auc"] > loss + 0.15


def test_dense_split_is_the_split_model():
    """The fixed-shape form DP-SGD differentiates per example computes the twin's logits."""
    cfg = ExperimentConfig.model_validate({"world": {"n_firms": 1500}, "split": {"out_of_time": False}})
    setting = build_setting(cfg, 0)
    applicants = np.concatenate([setting.splits["bank"][s] for s in ("train", "val", "test")])
    data = vertical_blocks(setting.parties, "bank", applicants, setting.splits["bank"]["train"])
    assert (data.coverage["supply_chain"].pos < 0).any()  # partial coverage is exercised
    for kind in ("logistic", "mlp"):
        model = make_split_model(kind, data.n_features, "bank", 3)
        coverage = {h: data.coverage[h] for h in model.top.holders}
        X = {h: torch.from_numpy(b) for h, b in data.blocks.items()}
        twin = predict_twin_logits(model, X, coverage, np.arange(len(applicants)))
        dense = DenseSplit(model)
        with torch.no_grad():
            out = dense(*dense.dense_inputs(data, len(applicants))).numpy()
        np.testing.assert_allclose(out, twin, atol=1e-5)


def test_dp_sgd_without_noise_or_clipping_is_a_full_batch_adam_step():
    """Per-example gradients, summed and divided by the batch, are the mean-loss gradient."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5)).astype(np.float32)
    y = (rng.random(40) < 0.4).astype(np.float32)
    cfg = TrainConfig(epochs=1, batch_size=1000, lr=0.05, patience=0)
    torch.manual_seed(0)
    dp_model, ref = make_model("mlp", 5, [8]), make_model("mlp", 5, [8])
    ref.load_state_dict(dp_model.state_dict())
    spent = dp_sgd_train(
        dp_model, [torch.from_numpy(X)], y, np.arange(30), np.arange(30, 40), cfg,
        DPSGDConfig(noise_multiplier=1e-15, max_grad_norm=100.0), seed=0,
    )  # fmt: skip
    opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        ref(torch.from_numpy(X[:30])), torch.from_numpy(y[:30])
    )
    loss.backward()
    opt.step()
    for a, b in zip(dp_model.parameters(), ref.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), atol=1e-5)
    assert spent["steps"] == 1 and spent["sampling_rate"] == 1.0 and spent["epsilon"] > 1e6


def test_lira_finds_an_overfit_mlp_and_dp_sgd_bites():
    cfg = ExperimentConfig.model_validate(
        {
            "world": {"n_firms": 3000, "default_rate": 0.3},
            "model": {"kind": "mlp", "hidden": [64, 64]},
            "training": {"epochs": 60, "lr": 0.01, "patience": 0, "batch_size": 32, "weight_decay": 0.0},
            "split": {"out_of_time": False},
        }
    )
    audit = MembershipConfig(
        enabled=True,
        methods=["siloed"],
        n_population=200,
        n_shadow=12,
        n_targets=13,
        dp=DPSGDConfig(noise_multiplier=2.0),
    )
    out = membership_audit(cfg, build_setting(cfg, 0), 0, audit)
    json.dumps(out)
    plain, private = out["results"]
    assert (plain["dp"], private["dp"]) == (False, True)
    assert plain["model_auc_members"] > plain["model_auc_nonmembers"] + 0.1  # overfit
    assert plain["lira"]["auc"] > 0.56  # seeds 0-3: 0.595-0.638
    assert plain["lira"]["tpr_at_fpr"]["0.01"] > 0.01  # seeds 0-3: 2.1-3.1%
    assert private["lira"]["auc"] < plain["lira"]["auc"] - 0.03  # seeds 0-3: 0.057-0.111 lower
    assert private["lira"]["auc"] < 0.6  # seeds 0-3: 0.527-0.576
    spent = private["privacy"]  # Opacus's accountant, checked against dp_accounting's for the same steps
    assert (spent["sampling_rate"], spent["steps"]) == (0.25, 60 * 4)  # 100 members, batches of 32
    assert spent["epsilon"] == pytest.approx(privacy.epsilon(2.0, 240, 0.25, 1e-5), rel=1e-6)
    assert spent["epsilon"] == pytest.approx(11.5, abs=0.1)
    assert private["dp_kind"] == "example-level, DP-SGD"


@pytest.mark.parametrize("topology", ["vertical", "horizontal"])
def test_every_method_is_audited(topology):
    world = {"n_firms": 3000} if topology == "vertical" else {"n_firms": 4000, "n_banks": 2}
    cfg = ExperimentConfig.model_validate(
        {
            "world": world,
            "topology": topology,
            "training": {"epochs": 3, "lr": 0.05, "batch_size": 256},
            "federation": {"horizontal": {"rounds": 2}},
            "split": {"out_of_time": False},
        }
    )
    audit = MembershipConfig(
        enabled=True, n_population=300, n_shadow=2, n_targets=1, dp=DPSGDConfig(target_epsilon=3.0)
    )
    out = membership_audit(cfg, build_setting(cfg, 0), 0, audit)
    json.dumps(out)
    got = [(r["method"], r["dp"]) for r in out["results"]]
    assert got == [(m, dp) for m in ("siloed", "centralized", "federated") for dp in (False, True)]
    assert out["fpr_resolution"] == pytest.approx(1 / 150)
    if topology == "vertical":  # the runner's centralized model is the federated one's twin: attacked once
        assert out["results"][4]["same_model_as"] == "centralized" == out["results"][5]["same_model_as"]
        assert out["results"][2]["lira"] == out["results"][4]["lira"]
    for r in out["results"]:
        assert 0.0 <= r["lira"]["auc"] <= 1.0 and set(r["lira"]["tpr_at_fpr"]) == {"0.001", "0.01"}
        assert (r.get("privacy") is not None) == r["dp"]
        if r["dp"]:  # the noise is solved for the whole epoch budget; early stopping only spends less
            assert 0 < r["privacy"]["epsilon"] <= 3.0 + 1e-6
    fed_dp = out["results"][-1]
    assert fed_dp["dp_kind"] == (
        "client-level, Flower" if topology == "horizontal" else "example-level, DP-SGD"
    )
