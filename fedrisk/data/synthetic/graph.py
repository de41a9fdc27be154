"""The trading graph: who supplies whom, and how distress travels up from buyers to their suppliers.

Construction is tiered preferential attachment: core enterprises form tier 0; every other firm is given a
tier 1..4 and sells to one or more buyers of the tier above, picked with probability proportional to a
heavy-tailed (Pareto) attractiveness. This yields a few hub buyers with thousands of suppliers and many
small firms with one or two buyers, and makes the tier to the core known by construction. The edge sampling
is vectorised per tier (one ``searchsorted`` over the attractiveness CDF), never per firm.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

TIER_SHARES = np.array([0.25, 0.35, 0.27, 0.13])
"""Share of non-core firms in tiers 1..4 (tier 1 sells directly to a core enterprise)."""


@dataclass
class TradingGraph:
    """A supplier -> buyer graph over all firms.

    Parameters
    ----------
    volume : scipy.sparse.csr_matrix
        ``(n, n)`` annual trade volume; row = supplier, column = buyer.
    tier : np.ndarray
        Hops from the firm to a core enterprise along its buyer edges (0 for the cores).
    """

    volume: sp.csr_matrix
    tier: np.ndarray

    @cached_property
    def n_buyers(self) -> np.ndarray:
        """Distinct buyers of each firm."""
        return np.diff(self.volume.indptr)

    @cached_property
    def n_suppliers(self) -> np.ndarray:
        """Distinct suppliers of each firm."""
        return np.bincount(self.volume.indices, minlength=self.volume.shape[0])

    @cached_property
    def buyer_shares(self) -> sp.csr_matrix:
        """Row-normalised volumes: the share of the supplier's sales that goes to each buyer."""
        totals = np.asarray(self.volume.sum(axis=1)).ravel()
        inverse = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
        return sp.diags_array(inverse) @ self.volume

    @cached_property
    def buyer_hhi(self) -> np.ndarray:
        """Herfindahl-Hirschman index of each firm's sales over its buyers (1 = a single buyer; 0 = none)."""
        shares = self.buyer_shares
        return np.asarray(shares.multiply(shares).sum(axis=1)).ravel()

    def buyer_average(self, values: np.ndarray) -> np.ndarray:
        """Sales-weighted mean of ``values`` over each firm's buyers (0 for firms without buyers)."""
        return self.buyer_shares @ values


def build_trading_graph(
    is_core: np.ndarray,
    size_class: np.ndarray,
    mean_buyers: float,
    attractiveness_tail: float,
    rng: np.random.Generator,
) -> TradingGraph:
    """Draw the tiered preferential-attachment trading graph.

    Parameters
    ----------
    is_core : np.ndarray
        Boolean mask of core enterprises (tier 0, buy but do not sell on the graph).
    size_class : np.ndarray
        Size-class codes (bigger firms attract more suppliers).
    mean_buyers : float
        Mean number of buyer draws per supplier (1 + Poisson); repeated draws of a buyer merge.
    attractiveness_tail : float
        Pareto shape of the buyer attractiveness; smaller means more hub-dominated.
    rng : np.random.Generator
        Source of randomness.
    """
    n = len(is_core)
    tier = np.zeros(n, dtype=np.int64)
    tier[~is_core] = 1 + rng.choice(len(TIER_SHARES), size=int((~is_core).sum()), p=TIER_SHARES)
    attractiveness = (1.0 + rng.pareto(attractiveness_tail, size=n)) * (1.0 + size_class)
    n_draws = np.where(is_core, 0, 1 + rng.poisson(mean_buyers - 1.0, size=n))

    suppliers, buyers = [], []
    for t in range(1, len(TIER_SHARES) + 1):  # loop over 4 tiers, vectorised within each
        sellers = np.flatnonzero(tier == t)
        candidates = np.flatnonzero(tier == t - 1)
        if len(sellers) == 0 or len(candidates) == 0:
            continue
        edge_sellers = np.repeat(sellers, n_draws[sellers])
        cdf = np.cumsum(attractiveness[candidates])
        picks = np.searchsorted(cdf, rng.random(len(edge_sellers)) * cdf[-1], side="right")
        suppliers.append(edge_sellers)
        buyers.append(candidates[np.minimum(picks, len(candidates) - 1)])
    supplier = np.concatenate(suppliers) if suppliers else np.zeros(0, dtype=np.int64)
    buyer = np.concatenate(buyers) if buyers else np.zeros(0, dtype=np.int64)
    volume = rng.lognormal(mean=0.0, sigma=1.0, size=len(supplier))
    graph = sp.csr_matrix((volume, (supplier, buyer)), shape=(n, n))  # duplicate pairs are summed
    graph.sum_duplicates()
    return TradingGraph(volume=graph, tier=tier)


def propagate_health(graph: TradingGraph, own_health: np.ndarray, contagion: float, steps: int) -> np.ndarray:
    """Health of each firm's buyers after ``steps`` hops of contagion, standardised over firms with buyers.

    A buyer's health is its own health mixed with its own buyers' health (weight ``contagion``), repeated
    ``steps - 1`` times before the final sales-weighted average over the firm's buyers. Firms without buyers
    (the cores) get 0, the population mean.
    """
    shares = graph.buyer_shares
    has_buyers = graph.n_buyers > 0
    health = own_health
    for _ in range(steps - 1):
        inherited = standardise(shares @ health, has_buyers)
        health = np.where(
            has_buyers, np.sqrt(1 - contagion) * own_health + np.sqrt(contagion) * inherited, health
        )
    return standardise(shares @ health, has_buyers)


def standardise(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """z-score ``values`` over ``mask``; entries outside the mask become 0 (the masked population's mean)."""
    out = np.zeros_like(values)
    if mask.any():
        chosen = values[mask]
        out[mask] = (chosen - chosen.mean()) / max(chosen.std(), 1e-12)
    return out
