"""Label leakage in vertical federation (Li et al., ICLR 2022): the passive holders' view of the gradients.

Margins come from seeds 0-2 of the small world below (logistic, batch 64, 3 epochs, ~1250 training
applicants, ~5.5% defaults): undefended norm AUC 0.94-0.99 and direction AUC 1.00 for both partners;
under noise of 4x the batch's largest gradient norm both AUCs stay within 0.06 of 0.5; clipping to the
smallest norm gives a norm AUC of exactly 0.5 and leaves the direction AUC at 1.00.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import fedrisk  # noqa: F401 - sets Flower's environment before flwr is imported
from fedrisk.audit.label_leakage import (
    DefenceSpec,
    LabelLeakageConfig,
    apply_defence,
    label_leakage_audit,
    run_tapped_split,
    vertical_blocks,
)
from fedrisk.config.experiment import ExperimentConfig
from fedrisk.data.setting import build_setting
from fedrisk.federation.vertical import train_centralized_twin
from fedrisk.protocol.leakage import _auc


def small_config(kind: str = "logistic", **world) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "world": {"n_firms": 3000, **world},
            "topology": "vertical" if not world.get("n_banks") else "horizontal",
            "model": {"kind": kind},
            "training": {"epochs": 3, "lr": 0.02, "patience": 0, "batch_size": 256},
            "split": {"out_of_time": False},
        }
    )


def test_rank_auc_is_sklearns_auc_with_ties():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.1).astype(int)
    score = np.round(rng.normal(size=200) + y, 1)  # rounded: many ties
    assert _auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert _auc(np.zeros(5, dtype=int), score[:5]) is None


def test_defences_do_what_they_claim():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(64, 4)) * rng.uniform(0.1, 3.0, size=(64, 1))
    norms = np.linalg.norm(g, axis=1)
    assert apply_defence(g, DefenceSpec(kind="none"), rng) is g
    clipped = np.linalg.norm(apply_defence(g, DefenceSpec(kind="clip", strength=0.0), rng), axis=1)
    assert np.allclose(clipped, norms.min())
    half = apply_defence(g, DefenceSpec(kind="clip", strength=0.5), rng)
    assert np.linalg.norm(half, axis=1).max() == pytest.approx(np.quantile(norms, 0.5))
    # Max Norm: every row's expected squared norm is the batch's largest (Li et al.'s heuristic)
    draws = np.stack([apply_defence(g, DefenceSpec(kind="max_norm"), rng) for _ in range(4000)])
    assert np.allclose((draws**2).sum(-1).mean(0), norms.max() ** 2, rtol=0.08)
    noisy = np.stack(
        [apply_defence(g, DefenceSpec(kind="noise", strength=2.0), rng) - g for _ in range(2000)]
    )
    assert np.sqrt((noisy**2).sum(-1).mean()) == pytest.approx(2.0 * norms.max(), rel=0.05)


def test_the_audited_run_is_the_federated_model():
    """Undefended, the in-process protocol gives the pooled twin's scores (the Flower run equals the twin)."""
    cfg = small_config()
    setting = build_setting(cfg, 0)
    splits = setting.splits["bank"]
    twin = train_centralized_twin(
        setting.parties, "bank", splits, "logistic", cfg.training, cfg.federation.vertical, 0
    )
    applicants = np.concatenate([splits["train"], splits["val"], splits["test"]])
    bank = setting.parties["bank"]
    y = bank.label[pd.Index(bank.ids).get_indexer(applicants)]
    n_tr, n_val = len(splits["train"]), len(splits["val"])
    data = vertical_blocks(setting.parties, "bank", applicants, splits["train"])
    run = run_tapped_split(
        data, y, np.arange(n_tr), np.arange(n_tr, n_tr + n_val), np.arange(n_tr + n_val, len(applicants)),
        "bank", "logistic", cfg.training, cfg.federation.vertical, 256, 0, DefenceSpec(), ["tax"],
    )  # fmt: skip
    p = 1.0 / (1.0 + np.exp(-run.test_logits.astype(np.float64)))
    np.testing.assert_allclose(p, twin.scores["test"].p, atol=1e-6)
    assert run.best_epoch == twin.best_epoch


def test_gradients_leak_labels_and_noise_stops_it():
    cfg = small_config()
    audit = LabelLeakageConfig(
        enabled=True,
        batch_size=64,
        defences=[
            DefenceSpec(kind="noise", strength=4.0),
            DefenceSpec(kind="clip", strength=0.0),
            DefenceSpec(kind="max_norm"),
        ],
    )
    out = label_leakage_audit(cfg, build_setting(cfg, 0), 0, audit)
    json.dumps(out)  # the runner stores it in results.json
    by = {r["label"]: r for r in out["results"]}
    assert list(by) == ["none", "noise=4", "clip=0", "max_norm"]  # the reference is added first
    assert set(out["partners"]) == {"tax", "supply_chain"}
    assert by["none"]["ks_cost"] == 0.0 and by["none"]["test_ks"] > 0.2
    for partner in out["partners"]:
        plain = by["none"]["leak"][partner]
        assert plain["batches_scored"] > 30
        assert plain["norm_auc"] > 0.9, plain  # seeds 0-2: 0.94-0.99
        assert plain["direction_auc"] > 0.95, plain  # seeds 0-2: 1.00
        noisy = by["noise=4"]["leak"][partner]
        assert abs(noisy["norm_auc"] - 0.5) < 0.1, noisy  # seeds 0-2: within 0.06
        assert abs(noisy["direction_auc"] - 0.5) < 0.1, noisy
        clipped = by["clip=0"]["leak"][partner]
        assert clipped["norm_auc"] == pytest.approx(0.5, abs=0.02)  # norms equalised ...
        assert clipped["direction_auc"] > 0.95  # ... directions still give the labels away
        assert by["max_norm"]["leak"][partner]["norm_auc"] < plain["norm_auc"] - 0.2
    for r in out["results"]:
        assert r["ks_cost"] == pytest.approx(by["none"]["test_ks"] - r["test_ks"])


def test_horizontal_runs_are_skipped():
    cfg = small_config(n_banks=2)
    out = label_leakage_audit(cfg, build_setting(cfg, 0), 0, LabelLeakageConfig(enabled=True))
    assert "skipped" in out
