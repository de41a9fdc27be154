"""Our histogram GBDT core: equal to xgboost `hist` on pooled data, horizontal == pooled, bins, bad input."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_curve

from fedrisk.core.errors import FedriskError
from fedrisk.models.gbdt import Binner, GBDTParams, LocalHistograms, SummedHistograms, boost, fit_pooled
from fedrisk.models.gbdt.baseline import train_xgboost
from fedrisk.models.gbdt.booster import PooledSession
from fedrisk.models.gbdt.horizontal import (
    HorizontalSession,
    bank_levels,
    bank_summary,
    merge_bins,
    union_levels,
)


def ks(y: np.ndarray, score: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, score)
    return float(np.max(tpr - fpr))


def credit_table(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Numeric columns (one with 15% missing, one discrete) and a categorical one, with real signal."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    x[:, 3] = np.round(x[:, 3] * 2)
    x[rng.random(n) < 0.15, 1] = np.nan
    sector = rng.choice(["agri", "mfg", "retail", "services", "transport"], n)
    logit = -2 + x[:, 0] - 0.7 * np.nan_to_num(x[:, 1], nan=1.0) + 0.5 * x[:, 2] * x[:, 3] + (sector == "mfg")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(5)])
    frame["sector"] = pd.Categorical(sector)
    return frame, y


PARAMS = GBDTParams(n_trees=40, max_depth=4, learning_rate=0.2, max_bins=32, early_stopping_rounds=5)


def test_core_reproduces_xgboost_hist_on_pooled_data():
    frame, y = credit_table(4000)
    train, valid, test = np.arange(2400), np.arange(2400, 3200), np.arange(3200, 4000)
    binner = Binner(PARAMS.max_bins).fit(frame.iloc[train])
    encoded = binner.encode(frame)
    codes = binner.transform_encoded(encoded)

    ours = fit_pooled(codes[train], y[train], binner.n_bins, PARAMS, valid=(codes[valid], y[valid]))
    xgb = train_xgboost(encoded[train], y[train], PARAMS, valid=(encoded[valid], y[valid]))

    assert len(ours.trees) == xgb.n_trees > 5  # early stopping stopped at the same tree
    p_ours, p_xgb = ours.predict_proba(codes[test]), xgb.predict_proba(encoded[test])
    assert np.max(np.abs(p_ours - p_xgb)) < 1e-5
    assert abs(ks(y[test], p_ours) - ks(y[test], p_xgb)) < 1e-6
    # the first tree's splits, feature and threshold, in xgboost's node order
    first = xgb.booster.trees_to_dataframe().query("Tree == 0 and Feature != 'Leaf'")
    tree = ours.trees[0]
    ours_splits = [
        (f"f{tree.feature[v]}", float(binner.bins_[tree.feature[v]].thresholds[tree.bin[v]]))
        for v in tree.internal
    ]
    theirs = sorted(zip(first.Feature, first.Split.astype(float), strict=True))
    assert [f for f, _ in sorted(ours_splits)] == [f for f, _ in theirs]
    np.testing.assert_allclose([v for _, v in sorted(ours_splits)], [v for _, v in theirs], rtol=1e-6)


def test_learned_default_direction_sends_missing_to_the_risky_side():
    rng = np.random.default_rng(3)
    n = 3000
    x = rng.normal(size=n)
    missing = rng.random(n) < 0.3
    y = (rng.random(n) < np.where(missing, 0.6, 1 / (1 + np.exp(2 + x)))).astype(np.int8)
    x[missing] = np.nan
    binner = Binner(16).fit(pd.DataFrame({"x": x}))
    model = fit_pooled(
        binner.transform(pd.DataFrame({"x": x})), y, binner.n_bins, GBDTParams(n_trees=1, max_depth=1)
    )
    root = model.trees[0]
    missing_leaf = root.left[0] if root.default_left[0] else root.right[0]
    other = root.right[0] if root.default_left[0] else root.left[0]
    assert root.value[missing_leaf] > root.value[other]  # missing rows land in the high-risk leaf


def _split_banks(frame: pd.DataFrame, y: np.ndarray, n_banks: int, seed: int):
    owner = np.random.default_rng(seed).integers(0, n_banks, len(y))
    return [(frame[owner == b].reset_index(drop=True), y[owner == b]) for b in range(n_banks)]


def test_horizontal_summed_histograms_equal_pooled_and_trees_match():
    frame, y = credit_table(3000, seed=1)
    banks = _split_banks(frame, y, 4, seed=2)
    levels = union_levels([bank_levels(f) for f, _ in banks])
    binner = merge_bins(
        [bank_summary(f, PARAMS.max_bins, levels, f"bank_{i}") for i, (f, _) in enumerate(banks)], 32
    )
    codes = [binner.transform(f) for f, _ in banks]

    summed = SummedHistograms([LocalHistograms(c, 32) for c in codes])
    pooled = LocalHistograms(np.vstack(codes), 32)
    rng = np.random.default_rng(0)
    grad, hess = np.rint(rng.normal(size=len(y)) * 2**26), np.rint(rng.random(len(y)) * 2**24)
    start = 0
    for bank, c in zip(summed.banks, codes, strict=True):
        bank.start_tree(grad[start : start + len(c)], hess[start : start + len(c)])
        start += len(c)
    pooled.start_tree(grad, hess)
    np.testing.assert_array_equal(summed.build([0]), pooled.build([0]))  # exact, not approximately

    params = GBDTParams(n_trees=8, max_depth=3, early_stopping_rounds=0)
    horizontal = boost(
        HorizontalSession([(c, b[1]) for c, b in zip(codes, banks, strict=True)], binner.n_bins, params),
        params,
    )
    twin = boost(
        PooledSession(np.vstack(codes), np.concatenate([b[1] for b in banks]), binner.n_bins, params), params
    )
    for a, b in zip(horizontal.trees, twin.trees, strict=True):
        for name in ("feature", "bin", "default_left", "value"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_horizontal_merged_bins_are_close_to_pooled_quantiles():
    rng = np.random.default_rng(4)
    banks = [pd.DataFrame({"x": rng.normal(loc=b * 0.3, size=2000)}) for b in range(5)]
    binner = merge_bins([bank_summary(f, 16, {}, "bank") for f in banks], 16)
    pooled = pd.concat(banks, ignore_index=True)
    shares = np.bincount(binner.transform(pooled)[:, 0], minlength=16) / len(pooled)
    assert binner.n_bins[0] == 16
    assert shares.min() > 0.6 / 16 and shares.max() < 1.5 / 16  # close to equal-frequency on the union


def test_bins_follow_xgboost_rule_and_mark_missing_and_unseen_levels():
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, np.nan, 1.0], "s": ["a", "b", None, "a", "c"]})
    binner = Binner(8).fit(frame)
    codes = binner.transform(pd.DataFrame({"x": [0.5, 1.0, 7.0, np.nan], "s": ["c", "zzz", "a", None]}))
    assert codes[:, 0].tolist() == [
        0,
        1,
        2,
        8,
    ]  # x < cut goes left; values beyond the max stay in the top bin
    assert codes[:, 1].tolist() == [2, 8, 0, 8]  # level codes; unseen and missing -> the missing code


def test_too_many_categorical_levels_is_one_clear_error_naming_the_key():
    frame = pd.DataFrame({"province": [f"p{i}" for i in range(40)]})
    with pytest.raises(FedriskError) as caught:
        Binner(32, holder="tax").fit(frame)
    assert caught.value.field == "model.max_bins"
    assert (
        "province" in str(caught.value) and "40 levels" in str(caught.value) and ">= 40" in str(caught.value)
    )


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"n_trees": 0}, "model.n_trees"),
        ({"max_depth": 2.5}, "model.max_depth"),
        ({"learning_rate": 0.0}, "model.learning_rate"),
        ({"reg_lambda": -1.0}, "model.reg_lambda"),
        ({"max_bins": 1}, "model.max_bins"),
        ({"num_leaves": 31}, "model.num_leaves"),
    ],
)
def test_bad_gbdt_parameters_name_the_key(values, field):
    with pytest.raises(FedriskError) as caught:
        GBDTParams.from_mapping(values)
    assert caught.value.field == field


def test_memory_stays_flat_in_the_number_of_trees():
    frame, y = credit_table(20000, seed=5)
    binner = Binner(32).fit(frame)
    codes = binner.transform(frame)

    def retained_and_peak(n_trees: int) -> tuple[int, int]:
        params = GBDTParams(n_trees=n_trees, max_depth=3, early_stopping_rounds=0)
        session = PooledSession(codes, y, binner.n_bins, params)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        result = boost(session, params)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(result.trees) == n_trees
        return current - before, peak - before

    few_kept, few_peak = retained_and_peak(3)
    many_kept, many_peak = retained_and_peak(24)
    per_tree = (many_kept - few_kept) / 21
    assert per_tree < 8_000  # a tree is a few arrays of <= 15 nodes; one row array alone would be 80 kB
    assert many_peak - few_peak < 200_000
