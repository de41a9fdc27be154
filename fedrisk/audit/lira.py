"""The likelihood-ratio membership attack (LiRA) and how attacks are scored.

    N. Carlini, S. Chien, M. Nasr, S. Song, A. Terzis, F. Tramèr. "Membership Inference Attacks From First
    Principles". IEEE S&P 2022 (arXiv:2112.03570).

No maintained library runs LiRA on torch tabular models (the authors' code is a research script for JAX
image models), and it is short, so it is written here. The statistic is the logit-scaled confidence on the
true label (`confidence`); per example, Gaussians are fitted to the IN and OUT shadows' statistics
(`lira_scores`); attacks are scored by ROC AUC, TPR at low FPR and the membership advantage
(`attack_metrics`, on scikit-learn's ROC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve


def lira_scores(
    conf: np.ndarray, keep: np.ndarray, target: int, fix_variance: bool = True
) -> dict[str, np.ndarray]:
    """Membership scores for model ``target``'s examples, its shadows being every other model.

    Parameters
    ----------
    conf : np.ndarray
        ``(n_models, n)`` logit-scaled confidence of each model on each population example.
    keep : np.ndarray
        ``(n_models, n)`` bool: example ``i`` was in model ``k``'s training set.
    target : int
        Row of ``conf`` attacked.
    fix_variance : bool
        Share one variance (pooled within-example) across examples instead of one per example.

    Returns
    -------
    dict
        ``online`` (log N(c; IN) - log N(c; OUT)), ``offline`` ((c - mu_out) / sd_out) and ``loss`` (c):
        higher = more likely a member.
    """
    shadows = np.arange(len(conf)) != target
    c, k = conf[shadows], keep[shadows]
    observed = conf[target]

    def fit(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = mask.sum(0)
        values = np.where(mask, c, 0.0)
        fallback = c[mask].mean()  # examples with no shadow on this side: the population-wide mean
        mean = np.where(count > 0, values.sum(0) / np.maximum(count, 1), fallback)
        resid = np.where(mask, c - mean, 0.0) ** 2
        pooled = math.sqrt(resid.sum() / max(mask.sum() - (count > 0).sum(), 1))
        if fix_variance:
            return mean, np.full_like(mean, pooled)
        per_example = np.sqrt(resid.sum(0) / np.maximum(count - 1, 1))
        return mean, np.where(count > 1, np.maximum(per_example, 1e-6), pooled)

    mu_in, sd_in = fit(k)
    mu_out, sd_out = fit(~k)
    return {
        "online": norm.logpdf(observed, mu_in, sd_in) - norm.logpdf(observed, mu_out, sd_out),
        "offline": (observed - mu_out) / sd_out,
        "loss": observed.copy(),
    }


def attack_metrics(is_member: np.ndarray, score: np.ndarray, target_fpr: Sequence[float]) -> dict:
    """ROC AUC, TPR at each target FPR (the largest TPR with FPR <= target) and max(TPR - FPR)."""
    fpr, tpr, _ = roc_curve(is_member, score)
    return {
        "auc": float(roc_auc_score(is_member, score)),
        "tpr_at_fpr": {f"{f:g}": float(tpr[fpr <= f].max()) for f in target_fpr},
        "advantage": float(np.max(tpr - fpr)),
    }


def confidence(y: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Logit-scaled confidence on the true label: ``log(p_y / (1 - p_y)) = (2y - 1) * logit``."""
    return (2.0 * y.astype(np.float64) - 1.0) * logits.astype(np.float64)
