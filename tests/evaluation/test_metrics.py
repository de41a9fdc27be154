"""Credit metrics against hand-computed cases and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fedrisk.core.metrics import (
    approval_rate_at_bad_rate,
    bad_rate_at_approval,
    credit_metrics,
    ks_statistic,
    lift_at,
    population_stability_index,
)
from fedrisk.evaluation.uncertainty import _weighted_ks_auc, bootstrap_ks_auc, summarize


def test_ks_hand_computed():
    # bads at scores 0.9, 0.4; goods at 0.8, 0.3, 0.2, 0.1.
    y = np.array([1, 0, 1, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.4, 0.3, 0.2, 0.1])
    # thresholds: after 0.9 -> TPR .5 FPR 0; after 0.4 -> TPR 1, FPR .25 -> KS 0.75
    assert ks_statistic(y, p) == pytest.approx(0.75)


def test_perfect_and_inverted_scores():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    m = credit_metrics(y, p)
    assert (
        m["ks"] == pytest.approx(1.0) and m["auc"] == pytest.approx(1.0) and m["gini"] == pytest.approx(1.0)
    )
    inverted = credit_metrics(y, 1 - p)
    assert inverted["auc"] == pytest.approx(0.0) and inverted["ks"] == pytest.approx(1.0)


def test_bad_rate_at_approval_and_lift():
    y = np.array([0, 0, 0, 0, 1, 0, 0, 1, 1, 1])
    p = np.arange(10) / 10.0  # safest first
    assert bad_rate_at_approval(y, p, 0.5) == pytest.approx(1 / 5)
    assert lift_at(y, p, 0.1) == pytest.approx(1.0 / 0.4)
    assert approval_rate_at_bad_rate(y, p, 0.0) == pytest.approx(0.4)
    assert approval_rate_at_bad_rate(y, p, 1 / 6) == pytest.approx(0.7)


def test_psi_zero_for_same_distribution_and_large_for_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=20_000)
    assert population_stability_index(a, rng.normal(size=20_000)) < 0.01
    assert population_stability_index(a, rng.normal(loc=1.0, size=20_000)) > 0.25


def test_one_class_gives_nan_not_crash():
    m = credit_metrics(np.zeros(5), np.linspace(0, 1, 5))
    assert all(np.isnan(v) for v in m.values())


def test_weighted_ks_auc_matches_sklearn_with_repeated_rows():
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.1).astype(float)
    p = y * 0.4 + rng.random(2000)
    counts = np.bincount(rng.integers(0, 2000, 2000), minlength=2000)
    rows = np.repeat(np.arange(2000), counts)
    order = np.argsort(-p, kind="stable")
    ks, auc = _weighted_ks_auc(y[order], counts[order].astype(float))
    assert ks == pytest.approx(ks_statistic(y[rows], p[rows]), abs=1e-9)
    assert auc == pytest.approx(roc_auc_score(y[rows], p[rows]), abs=1e-9)


def test_bootstrap_ci_covers_truth_and_uplift_sign():
    rng = np.random.default_rng(0)
    per_seed = []
    for _ in range(4):
        y = (rng.random(3000) < 0.1).astype(int)
        weak = y * 0.5 + rng.normal(size=3000)
        strong = y * 1.5 + rng.normal(size=3000)
        per_seed.append({"bank": {"siloed": (y, weak), "federated": (y, strong)}})
    reps = bootstrap_ks_auc(per_seed, n_boot=200)
    uplift = reps["ks:federated"] - reps["ks:siloed"]
    assert np.quantile(uplift, 0.025) > 0.2  # 1.5 vs 0.5 sd separation: a large, certain gap
    s = summarize([0.3, 0.32, 0.31, 0.29], reps["ks:siloed"])
    assert s["ci"][0] < s["ci"][1]


def test_bootstrap_interval_contains_the_estimate_for_a_small_test_set():
    # KS of a resample is biased upwards on small sets; the interval must still bracket the estimate
    rng = np.random.default_rng(5)
    per_seed, values = [], []
    for _ in range(3):
        y = (rng.random(300) < 0.06).astype(int)
        p = y * 0.3 + rng.normal(size=300)
        per_seed.append({"bank": {"siloed": (y, p)}})
        values.append(ks_statistic(y, p))
    reps = bootstrap_ks_auc(per_seed, n_boot=300)
    raw_low = np.quantile(reps["ks:siloed"], 0.025)
    s = summarize(values, reps["ks:siloed"])
    assert s["ci"][0] <= s["mean"] <= s["ci"][1]
    assert reps["ks:siloed"].mean() > np.mean(values)  # the bias the correction removes is real here
    assert s["ci"][0] < raw_low
