"""The results directory records the split (splits.parquet), and a validator can check it is by firm."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedrisk.config import validate
from fedrisk.data.splits import check_firm_splits
from fedrisk.experiment import run_experiment
from fedrisk.runner.loop import load_units


def test_splits_parquet_has_one_split_per_firm_across_banks(tmp_path):
    raw = {
        "name": "splits",
        "seeds": [0, 1],
        "world": {"n_firms": 5000, "n_banks": 3, "banks": {"multi_head_rate": 0.5}},
        "training": {"epochs": 3},
        "federation": {"horizontal": {"rounds": 3}},
        "evaluation": {"n_bootstrap": 0},
        "runner": {"workers": 1},
    }
    config = validate(raw)
    root = tmp_path / "run"
    run_experiment(config, raw, root, methods=("siloed",))
    splits = pd.read_parquet(root / "splits.parquet")
    assert {"seed", "party", "id", "split"} <= set(splits.columns)
    assert set(splits["seed"]) == {0, 1} and set(splits["party"]) == {"bank_1", "bank_2", "bank_3"}
    assert set(splits["split"].astype(str)) == {"train", "val", "test", "oot"}
    # multi-bank firms exist, and none of them is a test applicant at one bank and a training one at another
    seed0 = splits[splits["seed"] == 0]
    assert seed0.groupby("id", observed=True)["party"].nunique().max() > 1
    side = seed0.assign(fit=seed0["split"].isin(["train", "val"]))
    mixed = side.groupby("id", observed=True)["fit"].nunique()
    assert (mixed == 1).all()
    assert check_firm_splits(splits) == []
    # the file is what the methods used: every scored test applicant is a test row of its bank
    (unit,) = [u for u in load_units(root, [({}, config)], ("siloed",)) if u.seed == 1]
    for key, scored in unit.outcomes["siloed"].scores.items():
        recorded = splits[
            (splits["seed"] == 1) & (splits["party"] == key.party) & (splits["split"] == key.split)
        ]
        recorded = recorded["id"]
        np.testing.assert_array_equal(np.sort(scored.ids.astype(str)), np.sort(recorded.to_numpy(str)))
