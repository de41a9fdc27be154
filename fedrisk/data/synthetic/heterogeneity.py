"""What makes banks differ beyond their portfolios: label definitions, credit policy and past approvals.

Real lenders do not only see different customers (`fedrisk.data.synthetic.lending`); they also define
default differently (90 days past due at one, 60 or 30 at another), run different credit policies (one
prices risk into the interest rate and demands collateral from weak firms, another does not, so the same
field predicts default differently: concept shift), and observe outcomes only for applicants their past
policy approved. The structural constants below are stylised, not estimated.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fedrisk.data.synthetic.factors import Outcome

BAD_RATE_MULTIPLE = {90: 1.0, 60: 1.6, 30: 2.5}
"""Bad rate of a looser default definition relative to 90 days past due (development cohort)."""

LIQUIDITY_WEIGHT = 0.8
"""Weight (in asset-value SDs) of a firm's short liquidity squeeze in reaching 30/60 days past due."""

POLICY_NOISE = 0.8
"""SD of the error of a bank's past credit policy around the firm's financial health."""


def liquidity_squeeze(operating_health: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A firm's short-term liquidity squeeze (standardised; higher = tighter): weak operations plus luck."""
    squeeze = -0.6 * operating_health + 0.8 * rng.standard_normal(len(operating_health))
    return (squeeze - squeeze.mean()) / max(float(squeeze.std()), 1e-12)


def delinquency_labels(
    outcome: Outcome, squeeze: np.ndarray, development: np.ndarray, definitions: Iterable[int]
) -> dict[int, np.ndarray]:
    """Default under each days-past-due definition: ``{90: default, 60: ..., 30: ...}`` (boolean per firm).

    A looser definition keeps every 90-day default and adds the survivors whose asset margin, squeezed by
    their liquidity, falls lowest, as many as make its development bad rate ``BAD_RATE_MULTIPLE`` times
    the 90-day one: more defaults, and partly driven by liquidity rather than solvency.
    """
    labels = {90: outcome.default}
    early = outcome.margin - LIQUIDITY_WEIGHT * squeeze
    survivors = development & ~outcome.default
    n_default = int((development & outcome.default).sum())
    for dpd in sorted(set(definitions) - {90}):
        extra = int(round((BAD_RATE_MULTIPLE[dpd] - 1.0) * n_default))
        ranked = np.sort(early[survivors])
        cut = ranked[min(extra, len(ranked)) - 1] if extra > 0 and len(ranked) else -np.inf
        labels[dpd] = outcome.default | (early <= cut)
    return labels


def concept_multipliers(n_banks: int, n_fields: int, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Per (bank, field) multiplier on how a field reflects firm health; all ones without concept shift.

    ``1 + shift * N(0, 1)``: at ``shift`` near 1 some banks' fields carry the opposite sign (a bank that
    lends cheaply to weak relationship customers, or asks strong firms for more collateral).
    """
    if shift <= 0:
        return np.ones((n_banks, n_fields))
    return 1.0 + shift * rng.standard_normal((n_banks, n_fields))


def past_approvals(
    financial_health: np.ndarray, bank: np.ndarray, n_banks: int, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Per relationship: 1 where the bank's past policy approved the applicant (its top ``rate`` share).

    The policy ranks applicants by a noisy view of financial health, bank by bank, so approved applicants
    are healthier than the bank's applicants as a whole (the selection bias of learning from approvals).
    """
    score = financial_health + POLICY_NOISE * rng.standard_normal(len(financial_health))
    approved = np.zeros(len(score), dtype=np.int8)
    for b in range(n_banks):
        rows = np.flatnonzero(bank == b)
        if len(rows):
            keep = int(np.ceil(rate * len(rows)))
            approved[rows[np.argsort(-score[rows], kind="stable")[:keep]]] = 1
    return approved
