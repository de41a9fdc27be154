"""Splits by firm across banks: no firm is a test applicant at one bank and a training applicant at another."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from fedrisk.config import ExperimentConfig
from fedrisk.core.errors import FedriskError
from fedrisk.data.setting import build_setting
from fedrisk.data.splits import check_firm_splits, split_applicants, split_firms, splits_frame
from fedrisk.data.synthetic import WorldConfig, generate_world
from fedrisk.data.table import PartyTable


@pytest.fixture(scope="module")
def banks() -> list[PartyTable]:
    """Five banks with a lot of multi-bank lending and a later cohort."""
    config = WorldConfig(n_firms=12_000, n_banks=5, banks={"multi_head_rate": 0.4})
    world = generate_world(config, seed=2)
    return [world.parties[name] for name in world.bank_names]


def _split_of(splits: dict, bank: str) -> pd.Series:
    return pd.Series({i: name for name, ids in splits[bank].items() for i in ids})


def test_a_firm_has_one_split_at_every_bank(banks):
    shared = pd.Series(np.concatenate([b.ids for b in banks])).value_counts()
    assert (shared > 1).sum() > 1000  # many firms borrow at several banks: the case that used to leak
    splits = split_firms(banks, 0.3, 0.15, seed=4)
    frame = splits_frame(splits, seed=4)
    assert check_firm_splits(frame) == []
    per_firm = frame.groupby("id", observed=True)["split"].nunique()
    assert per_firm.max() == 1
    # the old per-bank draw put firms in different splits at different banks; the check sees it
    old = {b.name: split_applicants(b, 0.3, 0.15, seed=4 + i) for i, b in enumerate(banks)}
    assert len(check_firm_splits(splits_frame(old, seed=4))) > 100


def test_each_bank_keeps_every_applicant_and_the_shares(banks):
    splits = split_firms(banks, 0.3, 0.15, seed=0)
    for bank in banks:
        got = np.concatenate(list(splits[bank.name].values()))
        assert sorted(got) == sorted(bank.ids)
        development = bank.ids[bank.cohort == 0]
        assert set(splits[bank.name]["oot"]) == set(bank.ids[bank.cohort == 1])
        share = len(splits[bank.name]["test"]) / len(development)
        assert 0.3 - 0.04 < share < 0.3 + 0.04, (bank.name, share)


def test_one_label_holder_gets_the_plain_stratified_split(banks):
    bank = banks[0]
    development = np.flatnonzero(bank.cohort == 0)
    rest, test = train_test_split(
        development, test_size=0.3, stratify=bank.label[development], random_state=9
    )
    train, _ = train_test_split(rest, test_size=0.15, stratify=bank.label[rest], random_state=10)
    got = split_firms([bank], 0.3, 0.15, seed=9)[bank.name]
    np.testing.assert_array_equal(got["test"], bank.ids[np.sort(test)])
    np.testing.assert_array_equal(got["train"], bank.ids[np.sort(train)])


def test_accepted_only_trains_on_approvals_and_tests_everyone(banks):
    splits = split_firms(banks, 0.3, 0.15, seed=1, accepted_only=True)
    for bank in banks:
        approved = dict(zip(bank.ids, bank.approved, strict=True))
        by = splits[bank.name]
        assert all(approved[i] for i in by["train"]) and all(approved[i] for i in by["val"])
        assert not all(approved[i] for i in by["test"])  # the test still covers rejected applicants
        assert len(by["train_rejected"]) > 0
    assert check_firm_splits(splits_frame(splits, seed=1)) == []
    # the past policy rejected riskier applicants: the selection bias users should see
    bank = banks[0]
    label = dict(zip(bank.ids, bank.label, strict=True))
    rejected_rate = np.mean([label[i] for i in splits[bank.name]["train_rejected"]])
    approved_rate = np.mean([label[i] for i in splits[bank.name]["train"]])
    assert rejected_rate > 1.5 * approved_rate


def test_setting_keeps_rejected_applicants_out_of_the_scored_splits():
    config = ExperimentConfig.model_validate(
        {"world": {"n_firms": 4000, "n_banks": 3}, "split": {"accepted_only": True}}
    )
    setting = build_setting(config, seed=0)
    for name in setting.label_holders:
        assert set(setting.splits[name]) == {"train", "val", "test", "oot"}
        assert set(setting.rejected[name]) == {"train_rejected", "val_rejected"}
    rows = setting.split_rows(seed=0)
    assert list(rows.columns) == ["seed", "party", "id", "split"]
    assert {"train_rejected", "oot"} <= set(rows["split"].astype(str))


def test_accepted_only_without_recorded_decisions_names_the_key(banks):
    bare = PartyTable(banks[0].name, banks[0].ids, banks[0].features, banks[0].label, banks[0].cohort)
    with pytest.raises(FedriskError, match="split.accepted_only"):
        split_firms([bare], 0.3, 0.15, seed=0, accepted_only=True)


def test_accepted_only_on_real_tables_is_refused_before_work_starts(vertical_tables):
    from fedrisk.config.experiment import load_config
    from fedrisk.methods.registry import preflight

    config, _ = load_config(vertical_tables / "config.toml", ["split.accepted_only=true"])
    with pytest.raises(FedriskError, match="split.accepted_only"):
        preflight(config)
