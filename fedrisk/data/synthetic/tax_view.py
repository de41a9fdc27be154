"""What the tax authority sees: declared revenue and its growth, VAT, grade, filing behaviour, invoices, staff.

Leakage guard: every field comes from filings and invoices of the tax year *before* the application; the
tax grade is the published annual grade, not a later re-grading after a default.

The latents load mostly on operating health (some on financial health and size); noise SDs scale with the
``tax.noise`` knob. Firms younger than a year get grade ``M`` (new taxpayer), as in the Chinese system.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from fedrisk.data.synthetic.state import FirmState
from fedrisk.data.synthetic.traits import SECTOR_NAMES

TAX_GRADES = ["A", "B", "C", "D", "M"]
TAX_NUMERIC_FEATURES = [
    "declared_revenue",
    "revenue_growth",
    "vat_paid",
    "late_filings_12m",
    "tax_arrears",
    "invoice_count",
    "invoice_void_rate",
    "insured_headcount",
    "declared_margin",
]
PERCEPTION_SD = {"financial": 1.0, "operating": 0.6}
"""SD of the shared error in the tax authority's perception of each factor (times ``tax.noise``)."""
# effective VAT burden on revenue by sector (same order as traits.SECTORS)
_VAT_BURDEN = np.array([0.045, 0.025, 0.03, 0.035, 0.03, 0.01, 0.04, 0.05, 0.05, 0.05])
assert len(_VAT_BURDEN) == len(SECTOR_NAMES)


def tax_features(state: FirmState, firms: np.ndarray, noise: float, rng: np.random.Generator) -> pd.DataFrame:
    """Tax-view features for the firms at indices ``firms``."""
    m = len(firms)
    # shared perception error per factor (see bank_view): more fields cannot recover a factor exactly
    fin = state.factors.financial[firms] + noise * PERCEPTION_SD["financial"] * rng.standard_normal(m)
    op = state.factors.operating[firms] + noise * PERCEPTION_SD["operating"] * rng.standard_normal(m)
    size = state.traits.size_class[firms].astype(float)
    drift = state.drift[firms]

    def noisy(sd: float) -> np.ndarray:
        return noise * sd * rng.standard_normal(m)

    revenue = np.exp(13.0 + 1.0 * size + 0.35 * op + 0.1 * fin + 0.2 * drift + noisy(0.5))
    growth = np.clip(0.05 + 0.10 * op + 0.03 * fin - 0.08 * drift + noisy(0.12), -0.9, 3.0)
    compliance = expit(1.5 + 0.6 * op + noisy(0.5))
    vat = revenue * _VAT_BURDEN[state.traits.sector[firms]] * compliance
    grade_latent = 0.7 * op + 0.2 * fin + noisy(0.6)
    grade = np.searchsorted([-1.6, -0.8, 0.5], grade_latent)  # D, C, B, A from low to high
    grade = np.array([3, 2, 1, 0])[grade]
    grade[state.traits.age_years[firms] < 1.0] = TAX_GRADES.index("M")
    late_filings = rng.poisson(np.exp(-1.3 - 0.7 * op + 0.15 * drift + noisy(0.5))).astype(float)
    has_arrears = rng.random(m) < expit(-2.3 - 0.8 * op - 0.3 * fin + noisy(0.4))
    arrears = np.where(has_arrears, np.exp(9.0 + 0.6 * size + noisy(1.0)), 0.0)
    invoices = rng.poisson(np.exp(4.0 + 0.8 * size + 0.25 * op + noisy(0.4))).astype(float)
    void_rate = expit(-3.3 - 0.4 * op + noisy(0.5))
    headcount = rng.poisson(np.exp(1.0 + 0.9 * size + 0.2 * op + noisy(0.4))).astype(float)
    margin = 0.06 + 0.05 * op + 0.015 * fin - 0.01 * drift + noisy(0.04)

    return pd.DataFrame(
        {
            "declared_revenue": np.round(revenue, -2),
            "revenue_growth": np.round(growth, 4),
            "vat_paid": np.round(vat, -1),
            "tax_grade": pd.Categorical.from_codes(grade, categories=TAX_GRADES),
            "late_filings_12m": late_filings,
            "tax_arrears": np.round(arrears, -1),
            "invoice_count": invoices,
            "invoice_void_rate": np.round(void_rate, 4),
            "insured_headcount": headcount,
            "declared_margin": np.round(margin, 4),
        }
    )
