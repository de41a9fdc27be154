"""Banks that differ like real lenders: label definitions, credit policy (concept shift), specialisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from fedrisk.data.synthetic import WorldConfig, generate_world
from fedrisk.data.synthetic.bank_view import BANK_NUMERIC_FEATURES


def _world(seed: int = 0, **banks):
    return generate_world(WorldConfig(n_firms=12_000, n_banks=4, banks=banks), seed=seed)


def test_labels_follow_each_banks_days_past_due_definition():
    world = _world(label_dpd=[90, 60, 30, 90])
    truth = world.firms.set_index("firm_id")
    development = truth["cohort"] == 0
    rate90 = truth.loc[development, "default_12m"].mean()
    rate60 = truth.loc[development, "default_60dpd"].mean()
    rate30 = truth.loc[development, "default_30dpd"].mean()
    assert abs(rate60 / rate90 - 1.6) < 0.05 and abs(rate30 / rate90 - 2.5) < 0.05
    # a 90-day default is a default under every looser definition
    assert (truth["default_60dpd"] >= truth["default_12m"]).all()
    assert (truth["default_30dpd"] >= truth["default_60dpd"]).all()
    for name, column in (("bank_1", "default_12m"), ("bank_2", "default_60dpd"), ("bank_3", "default_30dpd")):
        bank = world.parties[name]
        np.testing.assert_array_equal(bank.label, truth.loc[bank.ids, column].to_numpy())
        assert bank.meta["label_dpd"] == int(column.split("_")[1][:2]) if "dpd" in column else 90


def test_without_heterogeneity_every_bank_uses_the_firms_default():
    world = _world()
    truth = world.firms.set_index("firm_id")["default_12m"]
    for name in world.bank_names:
        bank = world.parties[name]
        np.testing.assert_array_equal(bank.label, truth.loc[bank.ids].to_numpy())
    assert not any(c.startswith("default_") and c.endswith("dpd") for c in world.firms.columns)


def _feature_auc_spread(concept_shift: float) -> float:
    """Mean over bank fields of the spread across banks of the field's AUC against the label."""
    world = _world(0, concept_shift=concept_shift, mix_concentration=1e3, size_concentration=1e3)
    spreads = []
    for column in BANK_NUMERIC_FEATURES:
        aucs = []
        for name in world.bank_names:
            x = world.parties[name].features[column]
            aucs.append(roc_auc_score(world.parties[name].label, x.fillna(x.median())))
        spreads.append(np.ptp(aucs))
    return float(np.mean(spreads))


def test_concept_shift_makes_the_same_field_predict_differently():
    assert _feature_auc_spread(1.0) > 2 * _feature_auc_spread(0.0)


def test_sector_concentration_makes_sector_specialists():
    def top_sector_share(concentration: float) -> float:
        world = _world(3, sector_concentration=concentration)
        shares = [
            world.parties[n].features["sector"].value_counts(normalize=True).max() for n in world.bank_names
        ]
        return float(np.mean(shares))

    assert top_sector_share(0.1) > top_sector_share(1e3) + 0.1


def test_risk_concentration_spreads_bank_bad_rates():
    def spread(concentration: float) -> float:
        return float(
            np.mean(
                [
                    np.std(
                        [
                            t.label.mean()
                            for n, t in _world(s, risk_concentration=concentration).parties.items()
                            if n.startswith("bank")
                        ]
                    )
                    for s in range(2)
                ]
            )
        )

    assert spread(0.2) > 1.8 * spread(1e3)


def test_past_policy_approves_its_share_and_the_healthier_applicants():
    world = _world(1)
    truth = world.firms.set_index("firm_id")
    for name in world.bank_names:
        bank = world.parties[name]
        assert abs(bank.approved.mean() - 0.7) < 0.01
        health = truth.loc[bank.ids, "financial_health"].to_numpy()
        assert health[bank.approved == 1].mean() > health[bank.approved == 0].mean() + 0.5
    assert isinstance(world.firms, pd.DataFrame)
