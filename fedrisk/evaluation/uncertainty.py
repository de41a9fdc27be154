"""Confidence intervals over seeds and test-set resamples.

A two-level (hierarchical) bootstrap: resample seeds, then, within each drawn seed, resample its test
applicants. The spread covers both the world/training randomness (seeds) and the finite test set. It is
paired: every method is scored on the same resampled applicants, so differences (uplift) keep their
correlation.

Resampling is done with multinomial weights over rows sorted once by score, so each replicate's KS and
AUC cost O(n) without re-sorting (scikit-learn has no weighted-bootstrap ROC; this is the few lines it
would take). Ties between scores are broken by order, which moves KS/AUC by less than 1/n.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass
class _Sorted:
    order: np.ndarray
    y: np.ndarray


def _weighted_ks_auc(y_sorted: np.ndarray, w_sorted: np.ndarray) -> tuple[float, float]:
    bad = np.cumsum(w_sorted * y_sorted)
    good = np.cumsum(w_sorted * (1 - y_sorted))
    if bad[-1] <= 0 or good[-1] <= 0:
        return np.nan, np.nan
    tpr = np.concatenate([[0.0], bad / bad[-1]])
    fpr = np.concatenate([[0.0], good / good[-1]])
    return float(np.max(np.abs(tpr - fpr))), float(np.trapezoid(tpr, fpr))


def bootstrap_ks_auc(
    per_seed: Sequence[Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]],
    n_boot: int = 400,
    seed: int = 12345,
) -> dict[str, np.ndarray]:
    """Replicates of the seed-mean of each method's party-averaged KS and AUC.

    Parameters
    ----------
    per_seed : list of {party: {method: (y, p)}}
        Each seed's test applicants per party (a bank), scored by every method on the same rows.
    n_boot : int
        Number of replicates.

    Returns
    -------
    dict
        ``{"ks:<method>": array(n_boot), "auc:<method>": array(n_boot)}``.
    """
    rng = np.random.default_rng(seed)
    prepared = []
    methods: list[str] = []
    for scored in per_seed:
        parties = {}
        for party, by_method in scored.items():
            parties[party] = {}
            for method, (y, p) in by_method.items():
                order = np.argsort(-np.asarray(p), kind="stable")
                parties[party][method] = _Sorted(order, np.asarray(y, dtype=float)[order])
                if method not in methods:
                    methods.append(method)
        prepared.append(parties)
    out = {f"{k}:{m}": np.full(n_boot, np.nan) for m in methods for k in ("ks", "auc")}
    n_seeds = len(prepared)
    for b in range(n_boot):
        sums = {key: [] for key in out}
        for s in rng.integers(0, n_seeds, n_seeds):
            per_method: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
            for by_method in prepared[s].values():
                n = len(next(iter(by_method.values())).order)
                counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
                for method, sorted_ in by_method.items():
                    per_method[method].append(_weighted_ks_auc(sorted_.y, counts[sorted_.order]))
            for method, values in per_method.items():
                if values:
                    arr = np.asarray(values)
                    sums[f"ks:{method}"].append(np.nanmean(arr[:, 0]))
                    sums[f"auc:{method}"].append(np.nanmean(arr[:, 1]))
        for key, values in sums.items():
            if values:
                out[key][b] = np.nanmean(values)
    return out


def summarize(values: Sequence[float], replicates: np.ndarray | None = None, level: float = 0.95) -> dict:
    """``{"mean", "std", "ci"}`` — CI from bootstrap replicates when given, else a t-interval over seeds."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return {"mean": None, "std": None, "ci": [None, None]}
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    alpha = (1 - level) / 2
    if replicates is not None and np.isfinite(replicates).sum() > 10:
        reps = replicates[np.isfinite(replicates)]
        # KS is a maximum: on a resample with repeated rows it is biased upwards (badly so for a small
        # bank's test set), so the percentile interval is re-centred on the estimate (bias correction).
        shift = float(reps.mean()) - mean
        ci = [float(np.quantile(reps, alpha)) - shift, float(np.quantile(reps, 1 - alpha)) - shift]
    elif len(arr) > 1:
        half = float(stats.t.ppf(1 - alpha, len(arr) - 1) * std / np.sqrt(len(arr)))
        ci = [mean - half, mean + half]
    else:
        ci = [mean, mean]
    return {"mean": mean, "std": std, "ci": ci}
