"""Hidden firm factors and the default model (one-factor Vasicek with a sector shock).

A firm's risk index ``r`` (probit units) adds its observable traits' base risk to its hidden factors, each
weighted by the ``signal`` knob of the holder that sees it. Its through-the-cycle PD is ``Phi(alpha + r)``.
Over the 12-month outcome window its latent asset value ``A = sqrt(rho) Z_sector + sqrt(1 - rho) eps`` is
drawn, and the firm defaults when ``A < alpha + r``. The intercept ``alpha`` is solved (scipy's brentq)
so that the mean point-in-time PD *given the realised sector shocks* equals ``default_rate``: the realised
rate then matches the target within binomial error, while the shock still moves risk between sectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr

MACRO_DOWNTURN = 0.35
"""Rise of every out-of-time firm's default threshold (probit units) at drift 1: the macro downturn."""

SECTOR_ROTATION = 0.5
"""SD of the zero-mean change of each sector's shock in the out-of-time cohort at drift 1."""


@dataclass
class HiddenFactors:
    """Latent standard-normal health factors per firm (higher = healthier); never shown to any holder."""

    financial: np.ndarray
    operating: np.ndarray
    chain_position: np.ndarray

    def composite(self) -> np.ndarray:
        """Overall own health (standardised equal-weight sum): what a firm passes on to its suppliers."""
        total = self.financial + self.operating + self.chain_position
        return (total - total.mean()) / max(total.std(), 1e-12)


def draw_hidden_factors(n: int, correlation: np.ndarray, rng: np.random.Generator) -> HiddenFactors:
    """Correlated standard-normal factors (financial, operating, chain position) via a Cholesky factor."""
    lower = np.linalg.cholesky(correlation)
    e = [rng.standard_normal(n) for _ in range(3)]
    z = [sum(lower[i, j] * e[j] for j in range(i + 1)) for i in range(3)]  # elementwise: no BLAS threads
    return HiddenFactors(financial=z[0], operating=z[1], chain_position=z[2])


def draw_sector_shocks(n_sectors: int, drift: float, rng: np.random.Generator) -> np.ndarray:
    """Sector shocks ``Z`` of shape ``(2, n_sectors)``: row 0 development cohort, row 1 out-of-time.

    The later cohort's sectors rotate by a zero-mean fresh shock of SD ``sqrt(drift) * SECTOR_ROTATION``
    (some sectors recover, others sink); the economy-wide downturn is `MACRO_DOWNTURN`, applied to the
    thresholds, so its size does not depend on the asset correlation or on the sectors' draw.
    """
    development = rng.standard_normal(n_sectors)
    rotation = rng.standard_normal(n_sectors)
    rotation -= rotation.mean()
    later = development + np.sqrt(drift) * SECTOR_ROTATION * rotation
    return np.vstack([development, later])


def point_in_time_pd(threshold: np.ndarray, shock: np.ndarray, rho: float) -> np.ndarray:
    """P(default | sector shock) = Phi((threshold - sqrt(rho) Z) / sqrt(1 - rho))."""
    return ndtr((threshold - np.sqrt(rho) * shock) / np.sqrt(1.0 - rho))


def calibrate_intercept(risk: np.ndarray, shock: np.ndarray, rho: float, target: float) -> float:
    """The intercept ``alpha`` making the mean point-in-time PD equal ``target`` (monotone, so brentq)."""

    def excess(alpha: float) -> float:
        return float(point_in_time_pd(alpha + risk, shock, rho).mean()) - target

    return brentq(excess, -15.0, 15.0, xtol=1e-7)


@dataclass
class Outcome:
    """Each firm's risk, PDs and realised 12-month default.

    Parameters
    ----------
    risk : np.ndarray
        Risk index (probit units, before the intercept).
    shock : np.ndarray
        The sector shock of the firm's sector and cohort.
    threshold : np.ndarray
        ``alpha + risk``: the firm defaults when its asset value falls below it.
    pd : np.ndarray
        Through-the-cycle PD ``Phi(threshold)``.
    pd_pit : np.ndarray
        Point-in-time PD given the realised sector shock (its mean over development firms is the target).
    default : np.ndarray
        Boolean realised default within 12 months.
    margin : np.ndarray
        Asset value minus threshold (negative = default): how close a survivor came to defaulting.
    """

    risk: np.ndarray
    shock: np.ndarray
    threshold: np.ndarray
    pd: np.ndarray
    pd_pit: np.ndarray
    default: np.ndarray
    margin: np.ndarray


def draw_outcome(
    risk: np.ndarray,
    shock: np.ndarray,
    rho: float,
    target: float,
    calibrate_on: np.ndarray,
    rng: np.random.Generator,
) -> Outcome:
    """Calibrate the intercept on the ``calibrate_on`` firms, then draw asset values and defaults."""
    alpha = calibrate_intercept(risk[calibrate_on], shock[calibrate_on], rho, target)
    threshold = alpha + risk
    asset = np.sqrt(rho) * shock + np.sqrt(1.0 - rho) * rng.standard_normal(len(threshold))
    return Outcome(
        risk=risk,
        shock=shock,
        threshold=threshold,
        pd=ndtr(threshold),
        pd_pit=point_in_time_pd(threshold, shock, rho),
        default=asset < threshold,
        margin=asset - threshold,
    )
