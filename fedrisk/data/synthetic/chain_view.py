"""What the supply-chain platform sees: the trading graph around a member firm and its order history.

This is the only holder that sees a firm's buyers: receivable days and exposure to distressed partners
carry the buyers' health (the contagion channel), which no bank or tax office observes.

Leakage guard: partner distress is the share of partners' orders *currently* overdue at application time,
a pre-outcome signal; partners' later defaults are never used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from fedrisk.data.synthetic.state import FirmState

CHAIN_NUMERIC_FEATURES = [
    "n_buyers",
    "n_suppliers",
    "buyer_hhi",
    "tier_to_core",
    "receivable_days",
    "payable_days",
    "on_time_delivery_rate",
    "order_growth",
    "distressed_partner_exposure",
]
PERCEPTION_SD = {"chain_position": 0.6, "buyer_health": 0.6, "operating": 1.0, "financial": 1.2}
"""SD of the platform's shared perception error per factor (times ``supply_chain.noise``)."""


def chain_features(
    state: FirmState, firms: np.ndarray, noise: float, rng: np.random.Generator
) -> pd.DataFrame:
    """Platform-view features for the member firms at indices ``firms``."""
    m = len(firms)
    graph = state.graph
    # shared perception error per factor (see bank_view): more fields cannot recover a factor exactly
    position = state.factors.chain_position[firms] + noise * PERCEPTION_SD[
        "chain_position"
    ] * rng.standard_normal(m)
    op = state.factors.operating[firms] + noise * PERCEPTION_SD["operating"] * rng.standard_normal(m)
    fin = state.factors.financial[firms] + noise * PERCEPTION_SD["financial"] * rng.standard_normal(m)
    buyers = state.buyer_health[firms] + noise * PERCEPTION_SD["buyer_health"] * rng.standard_normal(m)
    drift = state.drift[firms]

    def noisy(sd: float) -> np.ndarray:
        return noise * sd * rng.standard_normal(m)

    exposure = graph.buyer_average(state.partner_distress(noise, rng))[firms]
    receivable = np.exp(np.log(45.0) - 0.25 * buyers - 0.1 * position + 0.1 * drift + noisy(0.3))
    payable = np.exp(np.log(40.0) - 0.15 * position - 0.1 * fin + noisy(0.3))
    on_time = expit(2.0 + 0.5 * position + 0.2 * op + noisy(0.6))
    order_growth = 0.04 + 0.06 * position + 0.05 * buyers - 0.06 * drift + noisy(0.1)

    return pd.DataFrame(
        {
            "n_buyers": graph.n_buyers[firms].astype(float),
            "n_suppliers": graph.n_suppliers[firms].astype(float),
            "buyer_hhi": np.round(graph.buyer_hhi[firms], 4),
            "tier_to_core": graph.tier[firms].astype(float),
            "receivable_days": np.round(receivable, 1),
            "payable_days": np.round(payable, 1),
            "on_time_delivery_rate": np.round(on_time, 4),
            "order_growth": np.round(order_growth, 4),
            "distressed_partner_exposure": np.round(exposure, 4),
        }
    )
