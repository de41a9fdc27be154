"""Credit-scoring metrics on one set of scored applicants.

Scores are probabilities of default (higher = riskier). Ranking metrics come from scikit-learn; the
credit-specific ones (directional KS from the ROC curve, lift, bad rate at an approval rate, PSI) are a
few lines of numpy each because no maintained library ships them in this form. `ks_statistic` is THE KS of
the project: every other module calls it (or `roc_ks_auc`).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

METRICS = ("ks", "auc", "gini", "brier", "ece", "lift_top_decile", "bad_rate_at_approval")
"""Metrics `credit_metrics` reports for every method; the first two are the headline."""


def ks_statistic(y: np.ndarray, score: np.ndarray) -> float:
    """Kolmogorov–Smirnov, directional: max over thresholds of TPR − FPR, the score read "higher = riskier".

    A model that ranks backwards scores near 0, never high (max |TPR − FPR| would call it strong).
    Built on scikit-learn's ROC curve, so tied scores are one threshold.
    """
    fpr, tpr, _ = roc_curve(y, score)
    return float(max(0.0, np.max(tpr - fpr)))


def roc_ks_auc(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """(directional KS, AUC) from one ROC curve, for callers that need both every epoch."""
    from sklearn.metrics import auc

    fpr, tpr, _ = roc_curve(y, score)
    return float(max(0.0, np.max(tpr - fpr))), float(auc(fpr, tpr))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Mean |observed − predicted| default rate over quantile bins, weighted by bin size.

    Bins are scikit-learn's ``calibration_curve(strategy="quantile")`` bins; it does not return their
    sizes, so the few lines below recompute the same bin of every row to weight by it. Tied scores can
    make quantile bins very unequal, which is when the weighting matters.
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
    bins = np.searchsorted(edges[1:-1], p)  # the rule calibration_curve uses
    size = np.bincount(bins, minlength=n_bins).astype(np.float64)
    observed = np.bincount(bins, weights=y, minlength=n_bins)
    predicted = np.bincount(bins, weights=p, minlength=n_bins)
    used = size > 0
    gap = np.abs(observed[used] - predicted[used]) / size[used]
    return float(np.sum(gap * size[used]) / size.sum())


def _tie_averaged(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Outcomes in ascending score order, each replaced by the mean outcome of its group of tied scores.

    Selecting the k safest (or riskiest) applicants then counts a tie group straddling the cut at its
    average bad rate — the expectation over every order of the tied applicants — instead of depending on
    the input order.
    """
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(score, kind="stable")
    s = score[order]
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
    mean = np.bincount(group, weights=y[order]) / np.bincount(group)
    return mean[group]


def lift_at(y: np.ndarray, score: np.ndarray, fraction: float = 0.1) -> float:
    """Bad rate among the riskiest ``fraction`` of applicants divided by the overall bad rate (ties averaged)."""
    n_top = max(1, int(round(fraction * len(y))))
    ranked = _tie_averaged(y, score)
    base = float(np.mean(y))
    return float(ranked[-n_top:].mean() / base) if base > 0 else float("nan")


def bad_rate_at_approval(y: np.ndarray, score: np.ndarray, approval_rate: float) -> float:
    """Default rate among the approved when the safest ``approval_rate`` of applicants are approved.

    Applicants tied at the cut are approved at their group's average bad rate (see `_tie_averaged`).
    """
    n_approved = max(1, int(round(approval_rate * len(y))))
    return float(_tie_averaged(y, score)[:n_approved].mean())


def approval_rate_at_bad_rate(y: np.ndarray, score: np.ndarray, max_bad_rate: float) -> float:
    """Largest share of applicants that can be approved (safest first) keeping their bad rate ≤ target."""
    ranked = _tie_averaged(y, score)
    cumulative_bad = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
    ok = np.nonzero(cumulative_bad <= max_bad_rate + 1e-12)[0]
    return float((ok[-1] + 1) / len(ranked)) if len(ok) else 0.0


def population_stability_index(expected: np.ndarray, actual: np.ndarray, n_bins: int = 10) -> float:
    """PSI between two score distributions, bins at the deciles of ``expected`` (the training scores)."""
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 3:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / len(expected)
    a = np.histogram(actual, edges)[0] / len(actual)
    e, a = np.clip(e, 1e-6, None), np.clip(a, 1e-6, None)
    return float(np.sum((a - e) * np.log(a / e)))


def credit_metrics(y: np.ndarray, p: np.ndarray, approval_rate: float = 0.8) -> dict[str, float]:
    """All headline metrics for one scored set; NaN where a metric is undefined (one class only)."""
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0 or y.min() == y.max():
        return {name: float("nan") for name in METRICS}
    auc = float(roc_auc_score(y, p))
    return {
        "ks": ks_statistic(y, p),
        "auc": auc,
        "gini": 2.0 * auc - 1.0,
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "lift_top_decile": lift_at(y, p, 0.1),
        "bad_rate_at_approval": bad_rate_at_approval(y, p, approval_rate),
    }
