"""Which firms borrow, and at which banks: market shares, portfolio mix, and multi-head lending.

With several banks each bank gets a market share (Dirichlet over ``size_concentration``) and preferences over
region types, sectors and own-health quintiles (Dirichlet over ``mix_concentration``): a small concentration
gives banks very different portfolios and therefore different default rates. A firm's lenders are the top
``k`` banks of ``log(preference) + Gumbel`` noise -- weighted sampling without replacement in one argsort --
so its first bank is its primary bank and further banks are distinct. Financially weaker firms borrow at
more banks ("multi-head lending"), which raises their risk and which no single bank can see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from fedrisk.config.world import MultiBankKnobs

HEALTH_BUCKETS = 5
"""Own-health quintiles over which banks have a risk-appetite preference."""


@dataclass
class Lending:
    """Borrowing relationships as (firm, bank) pairs.

    Parameters
    ----------
    firm : np.ndarray
        Firm index of each relationship.
    bank : np.ndarray
        Bank index (0-based) of each relationship; a firm's first pair is its primary bank.
    n_lenders : np.ndarray
        Number of banks each firm borrows at (0 for non-borrowers).
    """

    firm: np.ndarray
    bank: np.ndarray
    n_lenders: np.ndarray

    def primary_bank(self) -> np.ndarray:
        """Index of each firm's primary bank, -1 for firms that borrow nowhere."""
        primary = np.full(len(self.n_lenders), -1, dtype=np.int64)
        first = np.ones(len(self.firm), dtype=bool)
        first[1:] = self.firm[1:] != self.firm[:-1]
        primary[self.firm[first]] = self.bank[first]
        return primary


def draw_lending(
    applicant: np.ndarray,
    financial_health: np.ndarray,
    own_health: np.ndarray,
    segments: list[tuple[np.ndarray, int, float]],
    n_banks: int,
    knobs: MultiBankKnobs,
    rng: np.random.Generator,
) -> Lending:
    """Assign each applicant to one or more banks.

    Parameters
    ----------
    applicant : np.ndarray
        Boolean mask of firms that borrow.
    financial_health : np.ndarray
        Drives multi-head borrowing (weaker firms borrow at more banks).
    own_health : np.ndarray
        Overall health; its quintile is the axis of each bank's risk appetite.
    segments : list of (codes, n_categories, concentration)
        Firm segments (e.g. region type, sector) over which each bank has a Dirichlet preference of that
        concentration (small = specialised banks).
    n_banks : int
        Number of banks.
    knobs : MultiBankKnobs
        Market-share concentration (the risk-appetite concentration too), multi-head rate.
    rng : np.random.Generator
        Source of randomness.
    """
    firms = np.flatnonzero(applicant)
    n_lenders = np.zeros(len(applicant), dtype=np.int64)
    if n_banks == 1:
        n_lenders[firms] = 1
        return Lending(firm=firms, bank=np.zeros(len(firms), dtype=np.int64), n_lenders=n_lenders)

    quintile = np.searchsorted(np.quantile(own_health, [0.2, 0.4, 0.6, 0.8]), own_health)
    segments = [*segments, (quintile, HEALTH_BUCKETS, knobs.concentration("risk"))]
    profile = knobs.profile_rng(1) or rng  # the banks' shares and preferences: fixed lenders if asked
    log_pref = np.log(_floored(profile.dirichlet(np.full(n_banks, knobs.size_concentration))))[None, :]
    log_pref = np.repeat(log_pref, len(firms), axis=0)
    for codes, n_categories, concentration in segments:
        # (n_banks, n_categories) preferences; column-normalising keeps every segment served by some bank
        pref = _floored(profile.dirichlet(np.full(n_categories, concentration), size=n_banks))
        pref = pref / pref.sum(axis=0, keepdims=True)
        log_pref += np.log(pref.T[codes[firms]])
    order = np.argsort(-(log_pref + rng.gumbel(size=log_pref.shape)), axis=1)

    p_multi = expit(logit(max(knobs.multi_head_rate, 1e-9)) - 0.8 * financial_health[firms])
    is_multi = rng.random(len(firms)) < p_multi
    count = 1 + is_multi * (1 + rng.poisson(0.4, size=len(firms)))
    count = np.minimum(count, n_banks)
    n_lenders[firms] = count

    take = np.arange(n_banks)[None, :] < count[:, None]  # row-major: each firm's banks in preference order
    return Lending(firm=np.repeat(firms, count), bank=order[take], n_lenders=n_lenders)


def _floored(weights: np.ndarray) -> np.ndarray:
    """Dirichlet draws with a tiny floor: a very small concentration underflows to exact zeros."""
    return np.maximum(weights, 1e-12)
