"""The single-bank world: determinism, calibration, coverage, schemas, missingness, contagion, drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fedrisk.data import PartyTable
from fedrisk.data.synthetic import World, WorldConfig, generate_world
from fedrisk.data.synthetic.bank_view import KYC_FEATURES

SMALL = WorldConfig(n_firms=3_000)


def _assert_tables_equal(a: PartyTable, b: PartyTable) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    pd.testing.assert_frame_equal(a.features, b.features)
    for left, right in ((a.label, b.label), (a.cohort, b.cohort)):
        assert (left is None) == (right is None)
        if left is not None:
            np.testing.assert_array_equal(left, right)


def test_same_seed_gives_identical_tables():
    first, second = generate_world(SMALL, seed=11), generate_world(SMALL, seed=11)
    pd.testing.assert_frame_equal(first.firms, second.firms)
    assert first.parties.keys() == second.parties.keys()
    for name in first.parties:
        _assert_tables_equal(first.parties[name], second.parties[name])


def test_different_seeds_give_different_worlds():
    first, second = generate_world(SMALL, seed=1), generate_world(SMALL, seed=2)
    assert not np.array_equal(first.firms["firm_id"], second.firms["firm_id"])
    assert (
        not first.parties["bank"]
        .features["loan_amount"]
        .equals(second.parties["bank"].features["loan_amount"])
    )


@pytest.mark.parametrize("target", [0.02, 0.06, 0.15])
def test_realised_default_rate_matches_the_target_within_binomial_error(target):
    n = 20_000
    rate = generate_world(WorldConfig(n_firms=n, default_rate=target), seed=5).firms["default_12m"].mean()
    assert abs(rate - target) < 4 * np.sqrt(target * (1 - target) / n)


def test_holders_and_coverage(world: World):
    firms = world.firms
    assert set(world.parties) == {"bank", "tax", "supply_chain"}
    n = len(firms)
    assert world.parties["bank"].n_rows == firms["is_applicant"].sum() == round(0.7 * n)
    assert world.parties["tax"].n_rows == firms["in_tax"].sum() == round(0.95 * n)
    assert world.parties["supply_chain"].n_rows == firms["in_supply_chain"].sum() == round(0.4 * n)
    applicants = firms.loc[firms["is_applicant"]]
    assert 0.9 < applicants["in_tax"].mean() <= 1.0
    assert 0.25 < applicants["in_supply_chain"].mean() < 0.55
    non_borrowers = set(firms.loc[~firms["is_applicant"], "firm_id"])
    assert non_borrowers & set(world.parties["tax"].ids)  # known to partners, yet not applicants
    assert not non_borrowers & set(world.parties["bank"].ids)


def test_party_tables_follow_the_contract(world: World):
    bank, tax, chain = (world.parties[n] for n in ("bank", "tax", "supply_chain"))
    assert bank.label.dtype == np.int8 and set(np.unique(bank.label)) == {0, 1}
    assert bank.cohort.dtype == np.int8 and 0.15 < bank.cohort.mean() < 0.25  # a later cohort by default
    assert tax.label is None and chain.label is None
    columns = [list(t.features.columns) for t in (bank, tax, chain)]
    assert sum(len(c) for c in columns) == len(set().union(*columns))  # names unique across holders
    assert set(KYC_FEATURES) <= set(columns[0]) and not set(KYC_FEATURES) & set(columns[1] + columns[2])
    for table in (bank, tax, chain):
        assert len(set(table.ids)) == table.n_rows
        for column in table.features.columns:
            dtype = table.features[column].dtype
            assert isinstance(dtype, pd.CategoricalDtype) or dtype == np.float64, (table.name, column, dtype)
    assert tax.features["tax_grade"].cat.categories.tolist() == ["A", "B", "C", "D", "M"]
    truth = world.firms.set_index("firm_id")
    np.testing.assert_array_equal(bank.label, truth.loc[bank.ids, "default_12m"].to_numpy())


def test_holders_do_not_share_row_order(world: World):
    """Only ids link the tables: rows are not in a common order that would leak the join."""
    truth = world.firms.set_index("firm_id")
    position = pd.Series(np.arange(len(truth)), index=truth.index)
    bank_positions = position.loc[world.parties["bank"].ids].to_numpy()
    assert not np.all(np.diff(bank_positions) > 0)


def test_missingness_is_not_at_random(world: World):
    """Worse firms more often miss a field, so a missing indicator carries (some) risk signal."""
    bank = world.parties["bank"]
    missing = bank.features[bank.numeric_columns()].drop(columns="firm_age_years").isna().any(axis=1)
    assert 0.1 < missing.mean() < 0.4
    assert bank.label[missing.to_numpy()].mean() > 1.2 * bank.label[~missing.to_numpy()].mean()
    assert not bank.features[["sector", "province", "firm_age_years"]].isna().any().any()


def test_contagion_puts_buyer_health_into_default_risk(world: World):
    """Firms whose buyers are unhealthy default more, and only the platform's exposure feature sees it."""
    firms = world.firms[~world.firms["is_core"]]
    auc = roc_auc_score(firms["default_12m"], -firms["buyer_health"])
    assert auc > 0.55
    chain = world.parties["supply_chain"].features
    truth = world.firms.set_index("firm_id").loc[world.parties["supply_chain"].ids]
    known = chain["distressed_partner_exposure"].notna().to_numpy()
    corr = np.corrcoef(chain["distressed_partner_exposure"][known], truth["buyer_health"][known])[0, 1]
    assert corr < -0.3


def test_trading_graph_is_hub_dominated(world: World):
    firms = world.firms
    suppliers = firms["n_suppliers"].to_numpy()
    top = np.sort(suppliers)[::-1][: max(1, len(firms) // 100)]
    assert top.sum() > 0.5 * suppliers.sum()  # the top 1% of buyers take most supplier links
    assert (firms.loc[firms["is_core"], "tier_to_core"] == 0).all()
    assert firms.loc[~firms["is_core"], "tier_to_core"].between(1, 4).all()
    assert not firms.loc[firms["is_core"], "is_applicant"].any()


def test_out_of_time_cohort_drifts():
    config = WorldConfig(n_firms=20_000, out_of_time={"fraction": 0.3, "drift": 0.8})
    world = generate_world(config, seed=2)
    bank = world.parties["bank"]
    later = bank.cohort == 1
    assert 0.25 < later.mean() < 0.35
    assert bank.label[later].mean() > 1.2 * bank.label[~later].mean()  # the macro downturn
    utilisation = bank.features["credit_utilisation"]
    assert utilisation[later].mean() > utilisation[~later].mean() + 0.02  # features shift too
    development = world.firms["cohort"] == 0
    n = development.sum()
    assert abs(world.firms.loc[development, "default_12m"].mean() - 0.06) < 4 * np.sqrt(0.06 * 0.94 / n)


def test_a_stronger_holder_signal_makes_its_hidden_factor_matter_more():
    weak = generate_world(WorldConfig(n_firms=10_000, tax={"signal": 0.1}), seed=4).firms
    strong = generate_world(WorldConfig(n_firms=10_000, tax={"signal": 0.9}), seed=4).firms
    auc_weak = roc_auc_score(weak["default_12m"], -weak["operating_health"])
    auc_strong = roc_auc_score(strong["default_12m"], -strong["operating_health"])
    assert auc_strong > auc_weak + 0.1


def test_a_noisier_holder_measures_its_factor_less_well():
    def utilisation_vs_health(noise: float) -> float:
        world = generate_world(WorldConfig(n_firms=5_000, bank={"noise": noise, "missing_rate": 0.0}), seed=4)
        bank = world.parties["bank"]
        health = world.firms.set_index("firm_id").loc[bank.ids, "financial_health"].to_numpy()
        return float(np.corrcoef(bank.features["credit_utilisation"], health)[0, 1])

    assert utilisation_vs_health(0.3) < -0.6
    assert utilisation_vs_health(3.0) > -0.3
