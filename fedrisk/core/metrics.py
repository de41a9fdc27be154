"""Credit-scoring metrics on one set of scored applicants.

Scores are probabilities of default (higher = riskier). Ranking metrics come from scikit-learn; the
credit-specific ones (KS from the ROC curve, lift, bad rate at an approval rate, PSI) are a few lines
of numpy each because no maintained library ships them in this form.
"""

from __future__ import annotations

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

METRICS = ("ks", "auc", "gini", "brier", "ece", "lift_top_decile", "bad_rate_at_approval")
"""Metrics `credit_metrics` reports for every method; the first two are the headline."""


def ks_statistic(y: np.ndarray, score: np.ndarray) -> float:
    """Kolmogorov–Smirnov: max |TPR − FPR| over all thresholds (scikit-learn's ROC curve)."""
    fpr, tpr, _ = roc_curve(y, score)
    return float(np.max(np.abs(tpr - fpr)))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Mean |observed − predicted| default rate over quantile bins, weighted by bin size."""
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="quantile")
    # calibration_curve drops empty bins; with quantile bins they are (near) equal in size.
    return float(np.mean(np.abs(prob_true - prob_pred)))


def lift_at(y: np.ndarray, score: np.ndarray, fraction: float = 0.1) -> float:
    """Bad rate among the riskiest ``fraction`` of applicants divided by the overall bad rate."""
    n_top = max(1, int(round(fraction * len(y))))
    top = np.argsort(-score, kind="stable")[:n_top]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else float("nan")


def bad_rate_at_approval(y: np.ndarray, score: np.ndarray, approval_rate: float) -> float:
    """Default rate among the approved when the safest ``approval_rate`` of applicants are approved."""
    n_approved = max(1, int(round(approval_rate * len(y))))
    approved = np.argsort(score, kind="stable")[:n_approved]
    return float(y[approved].mean())


def approval_rate_at_bad_rate(y: np.ndarray, score: np.ndarray, max_bad_rate: float) -> float:
    """Largest share of applicants that can be approved (safest first) keeping their bad rate ≤ target."""
    order = np.argsort(score, kind="stable")
    cumulative_bad = np.cumsum(y[order]) / np.arange(1, len(y) + 1)
    ok = np.nonzero(cumulative_bad <= max_bad_rate + 1e-12)[0]
    return float((ok[-1] + 1) / len(y)) if len(ok) else 0.0


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
