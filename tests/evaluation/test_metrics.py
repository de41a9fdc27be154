"""Credit metrics against hand-computed cases and scikit-learn."""

import numpy as np
import pytest
from scipy.special import ndtr
from sklearn.metrics import roc_auc_score

from fedrisk.core.metrics import (
    approval_rate_at_bad_rate,
    bad_rate_at_approval,
    credit_metrics,
    expected_calibration_error,
    ks_statistic,
    lift_at,
    population_stability_index,
    roc_ks_auc,
)
from fedrisk.evaluation.uncertainty import _ks_auc_rows, bootstrap_ks_auc, smoothed_ks_auc, summarize


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
    # KS is directional (higher score = riskier): a backwards model must not look strong
    assert inverted["auc"] == pytest.approx(0.0) and inverted["ks"] == 0.0


def test_ks_of_a_backwards_model_is_near_zero_and_never_its_mirror():
    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.1).astype(int)
    p = 1 / (1 + np.exp(-(y * 1.0 + rng.normal(size=5000))))
    forward, backward = ks_statistic(y, p), ks_statistic(y, 1 - p)
    assert forward > 0.3
    assert backward < 0.03  # only noise: no threshold where a backwards score separates


def test_roc_ks_auc_is_the_same_ks_and_sklearn_auc():
    rng = np.random.default_rng(1)
    y = (rng.random(800) < 0.2).astype(int)
    p = np.round(y * 0.5 + rng.normal(size=800), 1)  # ties on purpose
    ks, auc = roc_ks_auc(y, p)
    assert ks == ks_statistic(y, p)
    assert auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert roc_ks_auc(y, -p)[0] == ks_statistic(y, -p) < 0.05


def test_bad_rate_at_approval_and_lift():
    y = np.array([0, 0, 0, 0, 1, 0, 0, 1, 1, 1])
    p = np.arange(10) / 10.0  # safest first
    assert bad_rate_at_approval(y, p, 0.5) == pytest.approx(1 / 5)
    assert lift_at(y, p, 0.1) == pytest.approx(1.0 / 0.4)
    assert approval_rate_at_bad_rate(y, p, 0.0) == pytest.approx(0.4)
    assert approval_rate_at_bad_rate(y, p, 1 / 6) == pytest.approx(0.7)


def test_ties_count_at_their_average_outcome_whatever_the_row_order():
    # 10 applicants, the middle four tied at 0.5 with 2 bads among them
    y = np.array([0, 0, 0, 1, 0, 1, 0, 1, 1, 0])
    p = np.array([0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5, 0.8, 0.9, 0.05])
    # approving 50% = the 3 safest below 0.5 (+0.05) = 4 goods ... then 1 of the tie group at its 50% bad rate
    assert bad_rate_at_approval(y, p, 0.5) == pytest.approx(0.5 / 5)
    # the riskiest 30%: 0.9 and 0.8 (both bad) and one tied applicant at 50%
    assert lift_at(y, p, 0.3) == pytest.approx((2.5 / 3) / 0.4)
    rng = np.random.default_rng(0)
    for _ in range(5):  # any input order gives the same numbers
        perm = rng.permutation(10)
        assert bad_rate_at_approval(y[perm], p[perm], 0.5) == pytest.approx(0.1)
        assert lift_at(y[perm], p[perm], 0.3) == pytest.approx((2.5 / 3) / 0.4)
        assert approval_rate_at_bad_rate(y[perm], p[perm], 0.1) == approval_rate_at_bad_rate(y, p, 0.1)


def test_a_constant_score_has_no_lift_and_the_average_bad_rate():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])  # the bads first: the old input-order rule gave lift 5
    p = np.full(10, 0.3)
    assert lift_at(y, p, 0.1) == pytest.approx(1.0)
    assert bad_rate_at_approval(y, p, 0.2) == pytest.approx(0.2)
    assert approval_rate_at_bad_rate(y, p, 0.19) == 0.0


def test_ece_is_weighted_by_bin_size():
    # ties make quantile bins unequal: 8 rows at 0.1 (bin 1), then one row each at 0.5 and 0.9
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 0])
    p = np.array([0.1] * 8 + [0.5, 0.9])
    edges = np.percentile(p, np.linspace(0, 100, 4))
    bins = np.searchsorted(edges[1:-1], p)
    expected = sum(
        (bins == b).sum() / len(y) * abs(y[bins == b].mean() - p[bins == b].mean()) for b in np.unique(bins)
    )
    assert expected_calibration_error(y, p, n_bins=3) == pytest.approx(expected)
    # an unweighted mean over the bins would differ here
    unweighted = np.mean([abs(y[bins == b].mean() - p[bins == b].mean()) for b in np.unique(bins)])
    assert abs(expected - unweighted) > 0.05


def test_psi_zero_for_same_distribution_and_large_for_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=20_000)
    assert population_stability_index(a, rng.normal(size=20_000)) < 0.01
    assert population_stability_index(a, rng.normal(loc=1.0, size=20_000)) > 0.25


def test_one_class_gives_nan_not_crash():
    m = credit_metrics(np.zeros(5), np.linspace(0, 1, 5))
    assert all(np.isnan(v) for v in m.values())


def test_resampled_ks_auc_rows_match_sklearn():
    rng = np.random.default_rng(3)
    y = (rng.random(500) < 0.1).astype(np.int8)
    s = y * 0.4 + rng.random(500)
    rows = np.vstack([rng.integers(0, 500, 500) for _ in range(3)])
    ys = np.vstack([y[r][np.argsort(-s[r], kind="stable")] for r in rows])
    ks, auc = _ks_auc_rows(ys)
    for k, r in enumerate(rows):
        assert ks[k] == pytest.approx(ks_statistic(y[r], s[r]), abs=1e-12)
        assert auc[k] == pytest.approx(roc_auc_score(y[r], s[r]), abs=1e-12)


def test_smoothed_world_auc_is_the_kernel_pair_probability():
    rng = np.random.default_rng(2)
    y = np.r_[np.ones(40), np.zeros(400)].astype(int)
    s = np.r_[rng.normal(1, 1.3, 40), rng.normal(0, 1, 400)]
    h = np.array([0.3, 0.5])
    ks, auc = smoothed_ks_auc(y, s, h)
    pair = ndtr((s[y == 1][:, None] - s[y == 0][None, :]) / np.hypot(*h)).mean()
    assert auc == pytest.approx(pair, abs=1e-4)
    assert 0 < ks < ks_statistic(y, s) + 0.05


def test_bootstrap_uplift_is_paired_and_certain_for_a_large_gap():
    rng = np.random.default_rng(0)
    per_seed = []
    for _ in range(4):
        y = (rng.random(1500) < 0.1).astype(int)
        weak = y * 0.5 + rng.normal(size=1500)
        strong = y * 1.5 + rng.normal(size=1500)
        per_seed.append({"bank": {"siloed": (y, weak), "federated": (y, strong)}})
    reps = bootstrap_ks_auc(per_seed, n_boot=150)
    uplift = reps["ks:federated"] - reps["ks:siloed"]
    assert np.quantile(uplift, 0.025) > 0.2  # 1.5 vs 0.5 sd separation: a large, certain gap
    assert set(reps.world) == set(reps) and 0 < reps.world["ks:siloed"] < reps.world["ks:federated"]


def test_small_test_set_interval_is_bias_corrected_downwards():
    # KS of 36-default test sets overstates the true KS; the interval moves down, keeping the estimate in
    rng = np.random.default_rng(5)
    per_seed, values = [], []
    for _ in range(3):
        y = np.r_[np.ones(36), np.zeros(564)].astype(int)
        p = np.r_[rng.normal(1.05, 1, 36), rng.normal(0, 1, 564)]
        per_seed.append({"bank": {"siloed": (y, p)}})
        values.append(ks_statistic(y, p))
    reps = bootstrap_ks_auc(per_seed, n_boot=300)
    s = summarize(values, reps["ks:siloed"], 0.95, reps.world["ks:siloed"], (0, 1))
    assert s["ci"][0] <= s["mean"] <= s["ci"][1]
    assert s["bias"] > 0.02  # the smoothed bootstrap sees the upward bias of a maximum
    plain = np.quantile(reps["ks:siloed"], [0.025, 0.975])
    assert s["ci"][0] < plain[0] - 0.02  # percentile interval would sit on the biased estimate


def test_summarize_without_replicates_is_a_t_interval():
    s = summarize([0.30, 0.32, 0.31, 0.29])
    half = 3.182446305284263 * np.std([0.30, 0.32, 0.31, 0.29], ddof=1) / 2
    assert s["ci"] == pytest.approx([0.305 - half, 0.305 + half])
    assert "bias" not in s
