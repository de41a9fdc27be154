"""Several banks: shared schema, overlapping customers, hidden multi-head risk, heterogeneity knob."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from fedrisk.core.errors import FedriskError
from fedrisk.data.synthetic import World, WorldConfig, generate_world


def _bank_tables(world: World):
    return [world.parties[name] for name in world.bank_names]


def test_banks_share_one_schema(multibank_world: World):
    assert world_names(multibank_world) == ["bank_1", "bank_2", "bank_3", "bank_4", "supply_chain", "tax"]
    tables = _bank_tables(multibank_world)
    for table in tables:
        pd.testing.assert_series_equal(table.features.dtypes, tables[0].features.dtypes)
        assert table.label is not None and table.n_rows > 100


def world_names(world: World) -> list[str]:
    return sorted(world.parties)


def test_multi_head_borrowers_appear_at_several_banks(multibank_world: World):
    tables = _bank_tables(multibank_world)
    counts = pd.Series(np.concatenate([t.ids for t in tables])).value_counts()
    truth = multibank_world.firms.set_index("firm_id")
    assert (counts > 1).mean() > 0.1
    np.testing.assert_array_equal(
        counts.sort_index().to_numpy(), truth.loc[counts.sort_index().index, "n_banks"]
    )
    lending = multibank_world.lending
    assert len(lending) == counts.sum() and lending.groupby("firm_id")["is_primary"].sum().eq(1).all()


def test_multi_head_lending_raises_default_risk(multibank_world: World):
    applicants = multibank_world.firms[multibank_world.firms["is_applicant"]]
    single = applicants.loc[applicants["n_banks"] == 1, "default_12m"].mean()
    multi = applicants.loc[applicants["n_banks"] > 1, "default_12m"].mean()
    assert multi > 1.5 * single


def test_no_overlap_without_multi_head_lending():
    world = generate_world(WorldConfig(n_firms=5_000, n_banks=3, banks={"multi_head_rate": 0.0}), seed=1)
    ids = np.concatenate([t.ids for t in _bank_tables(world)])
    assert len(ids) == len(set(ids)) == world.firms["is_applicant"].sum()


def test_feature_shift_moves_a_banks_feature_distribution():
    def median_rate_spread(shift: float) -> float:
        config = WorldConfig(
            n_firms=8_000, n_banks=4, banks={"feature_shift": shift, "mix_concentration": 1e3}
        )
        world = generate_world(config, seed=6)
        return float(np.ptp([t.features["interest_rate"].median() for t in _bank_tables(world)]))

    assert median_rate_spread(1.0) > median_rate_spread(0.0) + 0.3


def test_mix_concentration_controls_the_spread_of_bank_default_rates():
    """Small Dirichlet concentration -> banks with very different portfolios and default rates."""

    def spread(concentration: float) -> float:
        stds = []
        for seed in range(3):
            config = WorldConfig(n_firms=15_000, n_banks=4, banks={"mix_concentration": concentration})
            world = generate_world(config, seed=seed)
            stds.append(np.std([t.label.mean() for t in _bank_tables(world)]))
        return float(np.mean(stds))

    assert spread(0.2) > 1.8 * spread(1e3)


def test_bank_sizes_are_skewed_by_the_size_concentration():
    def size_cv(concentration: float) -> float:
        config = WorldConfig(n_firms=8_000, n_banks=5, banks={"size_concentration": concentration})
        sizes = [t.n_rows for t in _bank_tables(generate_world(config, seed=9))]
        return float(np.std(sizes) / np.mean(sizes))

    assert size_cv(0.3) > size_cv(1e3) + 0.3


def test_a_bank_left_without_borrowers_is_a_clear_user_error():
    with pytest.raises(FedriskError, match="world.n_banks: bank_.* drew no borrowers"):
        generate_world(WorldConfig(n_firms=100, n_banks=50), seed=1)


def test_extreme_concentrations_still_give_valid_probabilities():
    config = WorldConfig(
        n_firms=3_000, n_banks=3, banks={"size_concentration": 0.01, "mix_concentration": 0.01}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no log(0) or 0/0 on the way
        world = generate_world(config, seed=1)
    assert sum(t.n_rows for t in _bank_tables(world)) >= world.firms["is_applicant"].sum()
