"""Confidence intervals over seeds and test-set resamples.

A two-level (hierarchical) bootstrap: resample seeds, then, within each drawn seed, one bootstrap
resample of its test applicants. The spread covers both the world/training randomness (seeds) and the
finite test set. Paired: every method is scored on the same resampled applicants, so differences
(uplift) keep their correlation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np


def summarize(values: Sequence[float], replicates: np.ndarray | None = None, level: float = 0.95) -> dict:
    """``{"mean", "std", "ci"}`` — CI from bootstrap replicates of the mean when given, else a t-interval."""
    from scipy import stats

    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return {"mean": None, "std": None, "ci": [None, None]}
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    alpha = (1 - level) / 2
    if replicates is not None and np.isfinite(replicates).sum() > 10:
        reps = replicates[np.isfinite(replicates)]
        ci = [float(np.quantile(reps, alpha)), float(np.quantile(reps, 1 - alpha))]
    elif len(arr) > 1:
        half = float(stats.t.ppf(1 - alpha, len(arr) - 1) * std / np.sqrt(len(arr)))
        ci = [mean - half, mean + half]
    else:
        ci = [mean, mean]
    return {"mean": mean, "std": std, "ci": ci}


def hierarchical_bootstrap(
    per_seed: Sequence[Mapping[str, tuple[np.ndarray, np.ndarray]]],
    statistic: Callable[[Mapping[str, tuple[np.ndarray, np.ndarray]]], float],
    n_boot: int = 400,
    seed: int = 12345,
) -> np.ndarray:
    """Replicates of the seed-mean of ``statistic``.

    Parameters
    ----------
    per_seed : list of mappings method -> (y, p)
        Each seed's scored test set for every method; all methods of a seed share the same applicants.
    statistic : callable
        Maps one seed's {method: (y, p)} (possibly resampled) to a number, e.g. KS(fed)/KS(silo) − 1.
    """
    rng = np.random.default_rng(seed)
    n_seeds = len(per_seed)
    out = np.empty(n_boot)
    for b in range(n_boot):
        values = []
        for s in rng.integers(0, n_seeds, n_seeds):
            scored = per_seed[s]
            n = len(next(iter(scored.values()))[0])
            rows = rng.integers(0, n, n)
            values.append(statistic({m: (y[rows], p[rows]) for m, (y, p) in scored.items()}))
        out[b] = np.nanmean(values) if np.isfinite(values).any() else np.nan
    return out
