"""What a bank sees of its borrowers: the loan application, its own account history, and KYC traits.

Leakage guard: every field is known when the loan is granted. Delinquencies, days past due and utilisation
are measured over the 24 months *before* the application, never during the 12-month outcome window, and
nothing here depends on the realised default. Multi-head lending is deliberately absent: a bank sees only its
own relationship with the firm.

Each numeric field is a transform of a latent ``loadings @ factors + noise``; the loadings put most weight on
financial health, some on operating health and size, and the noise SDs are scaled by the ``bank.noise`` knob.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from fedrisk.data.synthetic.state import FirmState

BANK_NUMERIC_FEATURES = [
    "loan_amount",
    "loan_term_months",
    "interest_rate",
    "collateral_ratio",
    "relationship_months",
    "delinquencies_24m",
    "max_dpd_24m",
    "credit_utilisation",
    "deposit_balance_avg",
    "deposit_volatility",
    "products_held",
]
PERCEPTION_SD = {"financial": 0.9, "operating": 1.2}
"""SD of the shared error in the bank's perception of each factor (times the ``bank.noise`` knob)."""
KYC_FEATURES = ["sector", "region_type", "province", "size_class", "firm_age_years"]


def bank_features(
    state: FirmState,
    firms: np.ndarray,
    bank: np.ndarray,
    noise: float,
    feature_shift: float,
    n_banks: int,
    rng: np.random.Generator,
    concept: np.ndarray | None = None,
    profile_rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """Bank-view features for the relationships ``(firms[i], bank[i])``; one row per relationship.

    ``feature_shift`` draws, per bank and field, a latent offset with that SD (banks measure and price
    differently); ``concept`` (``n_banks x len(BANK_NUMERIC_FEATURES)``, default all ones) multiplies each
    field's link to the firm's health per bank (credit policy: the same field predicts differently).
    The same schema holds at every bank. ``profile_rng`` (fixed lenders) draws the offsets instead of ``rng``.
    """
    m = len(firms)
    # the bank's view of a firm's health carries one shared error per factor, so adding fields cannot
    # recover the factor exactly; the independent per-field noise comes on top
    fin = state.factors.financial[firms] + noise * PERCEPTION_SD["financial"] * rng.standard_normal(m)
    op = state.factors.operating[firms] + noise * PERCEPTION_SD["operating"] * rng.standard_normal(m)
    size = state.traits.size_class[firms].astype(float)
    age = state.traits.age_years[firms]
    drift = state.drift[firms]
    offsets = (profile_rng or rng).normal(0.0, feature_shift, size=(n_banks, len(BANK_NUMERIC_FEATURES)))[
        bank
    ]
    policy = np.ones_like(offsets) if concept is None else concept[bank]

    def latent(column: str, loadings: float | np.ndarray, noise_sd: float) -> np.ndarray:
        j = BANK_NUMERIC_FEATURES.index(column)
        return policy[:, j] * loadings + offsets[:, j] + noise * noise_sd * rng.standard_normal(m)

    loan_amount = np.exp(11.8 + 0.9 * size + latent("loan_amount", 0.2 * fin + 0.15 * op + 0.3 * drift, 0.6))
    term_latent = latent("loan_term_months", 0.35 * fin, 1.0)
    loan_term = np.array([6.0, 12.0, 24.0, 36.0])[np.searchsorted([-0.7, 0.3, 1.1], term_latent)]
    # a floor near the loan prime rate plus a right-skewed risk premium
    interest = 2.6 + np.exp(0.45 - 0.1 * size + 0.35 * latent("interest_rate", -0.5 * fin - 0.15 * op, 0.7))
    collateral = np.clip(0.7 + 0.3 * latent("collateral_ratio", 0.25 * fin, 1.0), 0.0, 2.0)
    relationship = np.minimum(age * 12.0, np.exp(3.0 + latent("relationship_months", 0.15 * fin, 0.7)))
    delinquency_rate = np.exp(-1.4 + latent("delinquencies_24m", -0.75 * fin - 0.15 * op + 0.2 * drift, 0.5))
    delinquencies = rng.poisson(delinquency_rate).astype(float)
    dpd_latent = latent("max_dpd_24m", -0.45 * fin, 0.6)
    max_dpd = np.where(
        delinquencies > 0, np.clip(np.exp(2.6 + dpd_latent + 0.3 * np.log1p(delinquencies)), 1, 180), 0
    )
    utilisation = expit(0.3 + latent("credit_utilisation", -0.7 * fin + 0.3 * drift, 0.6))
    deposits = np.exp(10.5 + 0.8 * size + latent("deposit_balance_avg", 0.45 * fin + 0.25 * op, 0.7))
    volatility = np.exp(-0.8 + latent("deposit_volatility", -0.3 * fin - 0.2 * op, 0.4))
    products = 1.0 + rng.poisson(np.exp(-0.3 + 0.3 * size + latent("products_held", 0.15 * fin, 0.3)))

    numeric = {
        "loan_amount": np.round(loan_amount, -3),
        "loan_term_months": loan_term,
        "interest_rate": np.round(interest, 2),
        "collateral_ratio": np.round(collateral, 3),
        "relationship_months": np.round(relationship),
        "delinquencies_24m": delinquencies,
        "max_dpd_24m": np.round(max_dpd).astype(float),
        "credit_utilisation": np.round(utilisation, 4),
        "deposit_balance_avg": np.round(deposits, -2),
        "deposit_volatility": np.round(volatility, 4),
        "products_held": products,
    }
    kyc = {
        name: state.traits.categorical(name)[firms]
        for name in ("sector", "region_type", "province", "size_class")
    }
    return pd.DataFrame({**kyc, "firm_age_years": age.astype(float), **numeric})
