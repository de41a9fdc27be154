"""The per-firm latent state every holder view is measured from (hidden; never handed to a holder)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from fedrisk.data.synthetic.factors import HiddenFactors
from fedrisk.data.synthetic.graph import TradingGraph
from fedrisk.data.synthetic.traits import Traits


@dataclass
class FirmState:
    """Everything about the firms at application time, before the outcome window opens.

    Parameters
    ----------
    traits : Traits
        Observable traits and ids.
    factors : HiddenFactors
        Financial health, operating health and supply-chain position.
    graph : TradingGraph
        The trading graph.
    buyer_health : np.ndarray
        Standardised health of the firm's buyers after contagion (0 for firms without buyers).
    chain_health : np.ndarray
        Supply-chain health: own chain position mixed with buyer health by the contagion knob.
    cohort : np.ndarray
        ``int8`` application cohort: 0 development, 1 out-of-time.
    drift : np.ndarray
        Feature drift in latent SDs per firm (the drift knob for out-of-time firms, 0 otherwise).
    """

    traits: Traits
    factors: HiddenFactors
    graph: TradingGraph
    buyer_health: np.ndarray
    chain_health: np.ndarray
    cohort: np.ndarray
    drift: np.ndarray

    @property
    def n_firms(self) -> int:
        return len(self.traits.firm_id)

    def partner_distress(self, noise: float, rng: np.random.Generator) -> np.ndarray:
        """Share of each firm's orders currently overdue to its suppliers: a noisy, pre-outcome distress signal."""
        own = self.factors.composite()
        return expit(-2.5 - 1.0 * own + noise * 0.5 * rng.standard_normal(self.n_firms))
