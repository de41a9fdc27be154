"""Who a holder knows (coverage) and which of its fields are missing (MNAR missingness)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit, logit


def select_share(log_weights: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Mask of exactly ``round(share * n)`` rows sampled without replacement with weights ``exp(log_weights)``.

    Uses the Gumbel-top-k trick (argpartition of log-weight + Gumbel noise), which is weighted sampling
    without replacement in one vectorised pass; ``-inf`` log-weights are never chosen.
    """
    n = len(log_weights)
    eligible = int(np.isfinite(log_weights).sum())
    k = min(int(round(share * n)), eligible)
    mask = np.zeros(n, dtype=bool)
    if k == 0:
        return mask
    keys = log_weights + rng.gumbel(size=n)
    mask[np.argpartition(-keys, k - 1)[:k]] = True
    return mask


def mask_missing(
    features: pd.DataFrame,
    columns: list[str],
    badness: np.ndarray,
    missing_rate: float,
    mnar_strength: float,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Blank the fields ``columns`` at random, more often for worse firms (missing not at random).

    Each cell is missing with probability ``expit(logit(missing_rate) + mnar_strength * badness)``,
    independently across fields, so ``missing_rate`` is the rate for a firm of average health
    (``badness = 0``).
    """
    if missing_rate <= 0.0 or not columns:
        return features
    numeric = list(columns)
    p_missing = expit(logit(missing_rate) + mnar_strength * badness)
    blank = rng.random((len(features), len(numeric))) < p_missing[:, None]
    values = features[numeric].to_numpy(copy=True)
    values[blank] = np.nan
    out = features.copy()
    out[numeric] = values
    return out
