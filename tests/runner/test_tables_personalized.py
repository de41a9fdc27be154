"""Real tables of many banks (one CSV per bank) run with personalisation and no other setting."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedrisk.config.experiment import load_config
from fedrisk.data.splits import check_firm_splits
from fedrisk.experiment import run_experiment

BANKS = {"lender_a": 2500, "lender_b": 1200, "lender_c": 700, "lender_d": 400}


def _write_banks(directory):
    """Lenders with their own credit policy (the same field weighs differently) and shared customers."""
    rng = np.random.default_rng(5)
    firms = np.array([f"F{i:06d}" for i in range(4000)])
    health = rng.normal(size=len(firms))
    for b, (name, n) in enumerate(BANKS.items()):
        rows = rng.choice(len(firms), size=n, replace=False)  # customers overlap between lenders
        x = health[rows] + rng.normal(size=n)
        policy = rng.normal(size=n)
        logit = -2.2 - 1.2 * health[rows] + (0.8 if b % 2 else -0.8) * policy
        frame = pd.DataFrame(
            {
                "firm_id": firms[rows],
                "cash_flow": x,
                "policy_score": policy + 0.3 * rng.normal(size=n),
                "region": rng.choice(["north", "south"], size=n),
                "default": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
            }
        )
        frame.to_csv(directory / f"{name}.csv", index=False)
    parties = "\n".join(
        f'[[data.parties]]\nname = "{name}"\npath = "{name}.csv"\nid = "firm_id"\nlabel = "default"\n'
        for name in BANKS
    )
    config = directory / "config.toml"
    config.write_text(
        f'[data]\nsource = "tables"\n\n{parties}\n[federation.horizontal]\npersonalization = "finetune"\n'
    )
    return config


@pytest.mark.slow
def test_many_bank_tables_run_with_personalisation_alone(tmp_path):
    config_path = _write_banks(tmp_path)
    # the user's config says nothing but tables and personalisation; the test only keeps it short
    cfg, raw = load_config(
        config_path,
        ["seeds=[0, 1]", "federation.horizontal.rounds=3", "evaluation.n_bootstrap=20", "runner.workers=1"],
    )
    assert cfg.federation.horizontal.personalization == "finetune" and cfg.data.source == "tables"
    results = run_experiment(cfg, raw, tmp_path / "run")
    assert results["complete"] and results["topology"] == "horizontal"
    assert (
        "personalized" in results["methods"]
        and results["uplift_personalized"]["ks_points"]["mean"] is not None
    )
    assert set(results["parties"]) == set(BANKS)
    for block in results["parties"].values():
        assert block["methods"]["personalized"]["ks"]["mean"] > 0.1
    assert set(results["personalization"]["kept"]) == set(BANKS)
    splits = pd.read_parquet(tmp_path / "run" / "splits.parquet")
    assert check_firm_splits(splits) == []
    assert json.loads((tmp_path / "run" / "results.json").read_text())["complete"]
