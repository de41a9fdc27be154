"""Confidence intervals over seeds and test-set resamples.

A two-level (hierarchical) bootstrap: resample seeds, then, within each drawn seed, resample its test
applicants. The spread covers both the world/training randomness (seeds) and the finite test set. It is
paired: every method is scored on the same resampled applicants, so differences (uplift) keep their
correlation.

Why a *smoothed* bootstrap. KS is a maximum over thresholds, so the empirical KS overestimates the
population KS (by ~0.05 at 36 defaults, ~0.015 at 380), and the plain bootstrap sees only about half of that
bias: the empirical curve it resamples is already peaked at its own maximum. Intervals built on it covered
the true KS 71-89% of the time at nominal 95% (docs/statistics.md). Resampling from the kernel-smoothed
score distributions instead (each resampled applicant's log-odds score plus Gaussian noise with a
Silverman bandwidth per class) gives a bootstrap world whose KS curve is as flat as the population's, so
its bias matches the real one. The interval is the basic (pivotal) one around that world's own value:
``[est - (q_hi - world), est - (q_lo - world)]``; for KS it can lie below the estimate when the test set
is small, which is the bias correction at work. AUC comes from the same resamples, around the smoothed
world's AUC. tests/evaluation/test_coverage.py checks the coverage by simulation.

No maintained library does a weighted, hierarchical, paired bootstrap of KS/AUC (scipy.stats.bootstrap
resamples one level and re-runs the statistic per replicate), so this is written out, vectorised over
replicates.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import logit, ndtr

CI_METHOD = (
    "hierarchical smoothed bootstrap, basic interval (KS, AUC, uplift); t-interval over seeds (other metrics)"
)
"""How the intervals in results.json are computed (its ``ci_method``; details in docs/statistics.md)."""

_CHUNK = 2_000_000
"""Resampled rows held in memory at once (replicates x applicants)."""

_GRID = 256
"""Thresholds at which the smoothed world's KS curve is evaluated (quantiles of the scores)."""


class Replicates(dict):
    """``{"ks:<method>": array(n_boot), "auc:<method>": array(n_boot)}`` plus ``world``: each key's value in
    the bootstrap's world (the centre of the basic interval; for KS, the smoothed distributions' KS)."""

    def __init__(self, values: Mapping[str, np.ndarray], world: Mapping[str, float]) -> None:
        super().__init__(values)
        self.world = dict(world)


@dataclass
class _Scored:
    """One (seed, party): its test applicants' labels and every method's scores."""

    y: np.ndarray
    logits: dict[str, np.ndarray]
    bandwidth: dict[str, np.ndarray]  # per method: [good, bad] kernel width on the log-odds scale
    world: dict[str, float]  # "ks:<method>", "auc:<method>": KS and AUC of the smoothed distributions


def _log_odds(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1 - 1e-15))


def silverman_bandwidth(x: np.ndarray) -> float:
    """Silverman's rule of thumb, 0.9 min(sd, IQR/1.349) n^(-1/5); a tiny width when the scores are tied."""
    if len(x) < 2:
        return 1e-9
    sd = float(np.std(x, ddof=1))
    q75, q25 = np.quantile(x, [0.75, 0.25])
    spread = min(sd, (q75 - q25) / 1.349) if q75 > q25 else sd
    return max(0.9 * spread * len(x) ** -0.2, 1e-9)


def smoothed_ks_auc(
    y: np.ndarray, s: np.ndarray, bandwidth: np.ndarray, grid: int = _GRID
) -> tuple[float, float]:
    """KS and AUC of the kernel-smoothed score distributions (the smoothed bootstrap's world).

    KS = max over t of P(bad score > t) - P(good score > t); AUC = P(bad score > good score), both from
    the two smoothed tail curves on a grid of thresholds (quantiles of the scores, padded by 8 widths).
    """
    pad = 8.0 * float(bandwidth.max())
    t = np.r_[s.min() - pad, np.quantile(s, np.linspace(0.0, 1.0, grid)), s.max() + pad]
    tails = []
    for label in (1, 0):
        x = s[y == label]
        if len(x) == 0:
            return float("nan"), float("nan")
        step = max(1, _CHUNK // len(t))
        tail = np.zeros(len(t))
        for start in range(0, len(x), step):
            tail += ndtr((x[None, start : start + step] - t[:, None]) / bandwidth[label]).sum(axis=1)
        tails.append(tail / len(x))
    bad, good = tails
    auc = float(np.sum((good[:-1] - good[1:]) * (bad[:-1] + bad[1:]) / 2)) + float(good[-1])
    return max(0.0, float(np.max(bad - good))), auc


def _prepare(scored: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> _Scored:
    methods = list(scored)
    y = np.asarray(scored[methods[0]][0]).astype(np.int8)
    logits, bandwidth, world = {}, {}, {}
    both = 0 < y.sum() < len(y)
    for method, (_, p) in scored.items():
        s = _log_odds(p)
        h = np.array([silverman_bandwidth(s[y == 0]), silverman_bandwidth(s[y == 1])])
        logits[method], bandwidth[method] = s, h
        ks, auc = smoothed_ks_auc(y, s, h) if both else (float("nan"), float("nan"))
        world[f"ks:{method}"], world[f"auc:{method}"] = ks, auc
    return _Scored(y, logits, bandwidth, world)


def _ks_auc_rows(y_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directional KS and AUC of each row of labels sorted riskiest first, no ties (NaN if a class is absent)."""
    bad = np.cumsum(y_sorted, axis=1, dtype=np.int32)
    good = np.arange(1, y_sorted.shape[1] + 1, dtype=np.int32) - bad
    n_bad, n_good = bad[:, -1:].astype(np.float64), good[:, -1:].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ks = np.maximum(np.max(bad / n_bad - good / n_good, axis=1), 0.0)
        # each bad outranks the goods placed after it
        auc = ((n_good - good) * y_sorted).sum(axis=1) / (n_bad * n_good)[:, 0]
    return ks, auc


def _resample_values(prepared: _Scored, k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """KS and AUC of ``k`` smoothed resamples of one (seed, party), per method, on shared rows and noise."""
    n = len(prepared.y)
    out = {f"{m}:{key}": np.empty(k) for m in prepared.logits for key in ("ks", "auc")}
    step = max(1, _CHUNK // max(n, 1))
    for start in range(0, k, step):
        size = min(step, k - start)
        idx = rng.integers(0, n, (size, n))
        noise = rng.standard_normal((size, n))
        y_r = prepared.y[idx]
        for method, s in prepared.logits.items():
            jittered = s[idx] + noise * prepared.bandwidth[method][y_r]
            order = np.argsort(-jittered, axis=1)
            ks, auc = _ks_auc_rows(np.take_along_axis(y_r, order, axis=1))
            out[f"{method}:ks"][start : start + size] = ks
            out[f"{method}:auc"][start : start + size] = auc
    return out


def bootstrap_ks_auc(
    per_seed: Sequence[Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]],
    n_boot: int = 400,
    seed: int = 12345,
) -> Replicates:
    """Replicates of the seed-mean of each method's party-averaged KS and AUC.

    Parameters
    ----------
    per_seed : list of {party: {method: (y, p)}}
        Each seed's test applicants per party (a bank), scored by every method on the same rows.
    n_boot : int
        Number of replicates.

    Returns
    -------
    Replicates
        ``{"ks:<method>": array(n_boot), "auc:<method>": array(n_boot)}`` and ``.world`` (the values in
        the bootstrap's world: the mean over seeds of the party-mean smoothed KS, or of the empirical AUC).
    """
    rng = np.random.default_rng(seed)
    prepared = [{party: _prepare(scored) for party, scored in parties.items()} for parties in per_seed]
    methods: list[str] = []
    for parties in per_seed:
        for by_method in parties.values():
            methods += [m for m in by_method if m not in methods]
    keys = [f"{k}:{m}" for m in methods for k in ("ks", "auc")]
    n_seeds = len(prepared)
    sums = {key: np.zeros(n_boot) for key in keys}
    counts = {key: np.zeros(n_boot) for key in keys}
    draws = rng.integers(0, n_seeds, (n_boot, n_seeds)) if n_seeds else np.zeros((n_boot, 0), int)
    for s, parties in enumerate(prepared):
        times = (draws == s).sum(axis=1)
        total = int(times.sum())
        if total == 0 or not parties:
            continue
        replicate = np.repeat(np.arange(n_boot), times)
        party_values = [_resample_values(p, total, rng) for p in parties.values()]
        for key in keys:
            kind, method = key.split(":", 1)
            per_party = [v[f"{method}:{kind}"] for v in party_values if f"{method}:{kind}" in v]
            if not per_party:
                continue
            with warnings.catch_warnings():  # a resample where every party lacked a class is NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                value = np.nanmean(np.vstack(per_party), axis=0)
            ok = np.isfinite(value)
            sums[key] += np.bincount(replicate[ok], weights=value[ok], minlength=n_boot)
            counts[key] += np.bincount(replicate[ok], minlength=n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {key: np.where(counts[key] > 0, sums[key] / counts[key], np.nan) for key in keys}
    world = {}
    for key in keys:
        per_seed_world = [
            np.nanmean(own)
            for parties in prepared
            if np.isfinite(own := [p.world.get(key, np.nan) for p in parties.values()]).any()
        ]
        world[key] = float(np.mean(per_seed_world)) if per_seed_world else float("nan")
    return Replicates(values, world)


def summarize(
    values: Sequence[float],
    replicates: np.ndarray | None = None,
    level: float = 0.95,
    world: float | None = None,
    bounds: tuple[float, float] | None = None,
) -> dict:
    """``{"mean", "std", "ci"}`` over seeds.

    With bootstrap ``replicates`` the CI is the basic (pivotal) interval around ``world``, the statistic's
    value in the bootstrap's world (the estimate itself when None): ``[mean - (q_hi - world),
    mean - (q_lo - world)]``, widened if needed to contain the estimate; ``bias`` = mean(replicates) - world
    (the estimate's bias as the bootstrap sees it) is added. Without replicates it is a
    t-interval over seeds. ``bounds`` clips the interval to the statistic's range (KS and AUC: [0, 1]).
    """
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return {"mean": None, "std": None, "ci": [None, None]}
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    alpha = (1 - level) / 2
    out: dict = {"mean": mean, "std": std}
    if replicates is not None and np.isfinite(replicates).sum() > 10:
        reps = replicates[np.isfinite(replicates)]
        centre = mean if world is None or not np.isfinite(world) else float(world)
        lo, hi = np.quantile(reps, [alpha, 1 - alpha])
        # kept around the estimate (results.json promises mean within ci): only ever widens the interval
        ci = [min(mean - (float(hi) - centre), mean), max(mean - (float(lo) - centre), mean)]
        out["bias"] = float(reps.mean()) - centre
    elif len(arr) > 1:
        half = float(stats.t.ppf(1 - alpha, len(arr) - 1) * std / np.sqrt(len(arr)))
        ci = [mean - half, mean + half]
    else:
        ci = [mean, mean]
    if bounds is not None:
        ci = [float(np.clip(c, *bounds)) for c in ci]
    out["ci"] = ci
    return out
