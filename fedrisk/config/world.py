"""The knobs of the synthetic SME world, validated by pydantic so a bad value names its field.

Every knob an experiment may sweep lives here; the generator modules read them and hold no other tunables
except documented structural constants (sector list, province weights, feature formulas).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Knobs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class HolderKnobs(_Knobs):
    """How much one data holder knows and how well it measures it.

    Parameters
    ----------
    coverage : float
        Share of all firms the holder has a row for.
    signal : float
        Weight (probit units) of the holder's own hidden factor in every firm's default risk: raising it makes
        that holder's data worth more, which is how an experiment varies the size of the uplift.
    noise : float
        Multiplier on the measurement noise of the holder's features (1 = the calibrated default, 0 = the
        features are exact functions of the hidden factors).
    missing_rate : float
        Probability that a numeric field is missing for a firm of average health (MNAR: worse firms more often).
    """

    coverage: float = Field(0.95, ge=0.0, le=1.0, description="Share of all firms the holder has a row for.")
    signal: float = Field(
        0.5,
        ge=0.0,
        le=3.0,
        description="Weight (probit units) of the holder's hidden factor in default risk.",
    )
    noise: float = Field(
        1.0, ge=0.0, le=10.0, description="Multiplier on the measurement noise of the holder's features."
    )
    missing_rate: float = Field(
        0.05,
        ge=0.0,
        le=0.9,
        description="Missing probability of a numeric field for a firm of average health.",
    )


class BankKnobs(HolderKnobs):
    """The label holder(s): `coverage` is the share of firms that borrow at some bank (the applicants)."""

    coverage: float = Field(
        0.7, gt=0.0, le=1.0, description="Share of firms that borrow at one or more banks (the applicants)."
    )
    signal: float = Field(
        0.4, ge=0.0, le=3.0, description="Weight (probit units) of financial health in default risk."
    )
    missing_rate: float = Field(
        0.02, ge=0.0, le=0.9, description="Missing probability of a numeric bank field for an average firm."
    )
    past_approval_rate: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="Share of its applicants a bank's past credit policy approved (split.accepted_only).",
    )


class TaxKnobs(HolderKnobs):
    """The tax authority: sees operating health (revenue, VAT, filing behaviour, headcount)."""

    coverage: float = Field(0.95, ge=0.0, le=1.0, description="Share of all firms registered for tax.")
    signal: float = Field(
        0.36, ge=0.0, le=3.0, description="Weight (probit units) of operating health in default risk."
    )


class ChainKnobs(HolderKnobs):
    """The supply-chain platform and the trading graph it observes.

    Parameters
    ----------
    core_fraction : float
        Share of firms that are large core enterprises at the top of the supply chains (not applicants).
    mean_buyers : float
        Mean number of buyers per supplier (1 + Poisson).
    attractiveness_tail : float
        Pareto shape of buyer attractiveness; smaller = heavier tail = a few hubs take most suppliers.
    contagion : float
        Share of a firm's chain health inherited from its buyers' health (0 = no contagion).
    contagion_steps : int
        How many hops of the trading graph the contagion propagates (1 or 2 in the brief; up to 3).
    concentration_risk : float
        Probit weight of dependence on one buyer (buyer HHI) in default risk.
    """

    coverage: float = Field(0.4, ge=0.0, le=1.0, description="Share of all firms trading on the platform.")
    signal: float = Field(
        0.45, ge=0.0, le=3.0, description="Weight (probit units) of supply-chain health in default risk."
    )
    missing_rate: float = Field(
        0.08,
        ge=0.0,
        le=0.9,
        description="Missing probability of a numeric platform field for an average firm.",
    )
    core_fraction: float = Field(
        0.002, gt=0.0, le=0.05, description="Share of firms that are large core enterprises (not applicants)."
    )
    mean_buyers: float = Field(2.0, ge=1.0, le=20.0, description="Mean number of buyers per supplier.")
    attractiveness_tail: float = Field(
        1.2,
        gt=0.3,
        le=10.0,
        description="Pareto shape of buyer attractiveness (smaller = more hub-dominated).",
    )
    contagion: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of a firm's chain health inherited from its buyers' health."
    )
    contagion_steps: int = Field(2, ge=1, le=3, description="Hops of the trading graph contagion travels.")
    concentration_risk: float = Field(
        0.15, ge=0.0, le=2.0, description="Probit weight of buyer concentration (HHI) in default risk."
    )


class MultiBankKnobs(_Knobs):
    """Several banks: who lends to whom, and how unlike each other the banks are.

    Parameters
    ----------
    multi_head_rate : float
        Share of borrowers of average health that borrow at more than one bank (if ``n_banks > 1``).
    multi_head_risk : float
        Probit increase of default risk per extra lender; invisible to any single bank.
    size_concentration : float
        Dirichlet concentration of bank market shares (small = a few big banks, large = equal sizes).
    mix_concentration : float
        Dirichlet concentration of each bank's preference over regions, sectors and risk grades
        (small = very different portfolios and default rates, large = near-IID banks).
    feature_shift : float
        Standard deviation of a per-bank, per-feature offset in the latent scale (bank-specific measurement).
    region_concentration, sector_concentration, risk_concentration : float or None
        Per-axis Dirichlet concentrations of the banks' preferences over region types (regional banks),
        sectors (sector specialists) and own-health quintiles (risk appetite, hence bad rate); None = use
        ``mix_concentration``.
    concept_shift : float
        Standard deviation of a per-bank, per-field multiplier on how the field reflects a firm's health
        (bank-specific credit policy: one bank prices risk into its rate or demands collateral from weak
        firms, another does not), so the same feature predicts default differently at each bank.
    profile_seed : int or None
        Seed of everything that describes a bank rather than its customers (market share, portfolio
        preferences, feature shift, credit policy): with it, ``bank_3`` is the same lender in every seed of an
        experiment (only firms and outcomes are redrawn), so per-bank results can be averaged over seeds.
        None = each seed draws new banks.
    label_dpd : list of int
        Days past due that count as default, bank by bank in turn (``[90, 60]``: bank_1 90, bank_2 60, ...).
        60 or 30 days also count short liquidity squeezes, so those banks see more defaults, driven partly
        by liquidity rather than solvency.
    """

    multi_head_rate: float = Field(
        0.15, ge=0.0, le=0.9, description="Share of average-health borrowers with more than one lender."
    )
    multi_head_risk: float = Field(
        0.25, ge=0.0, le=2.0, description="Probit increase of default risk per extra lender."
    )
    size_concentration: float = Field(
        2.0, gt=0.0, le=1e4, description="Dirichlet concentration of bank market shares (small = skewed)."
    )
    mix_concentration: float = Field(
        5.0,
        gt=0.0,
        le=1e4,
        description="Dirichlet concentration of bank region/sector/risk mix (small = skewed).",
    )
    feature_shift: float = Field(
        0.0, ge=0.0, le=3.0, description="SD of a per-bank, per-feature latent offset (feature shift)."
    )
    region_concentration: float | None = Field(
        None,
        gt=0.0,
        le=1e4,
        description="Dirichlet concentration of region preference; empty = mix_concentration.",
    )
    sector_concentration: float | None = Field(
        None,
        gt=0.0,
        le=1e4,
        description="Dirichlet concentration of sector preference; empty = mix_concentration.",
    )
    risk_concentration: float | None = Field(
        None,
        gt=0.0,
        le=1e4,
        description="Dirichlet concentration of risk appetite (bad rate); empty = mix_concentration.",
    )
    concept_shift: float = Field(
        0.0,
        ge=0.0,
        le=3.0,
        description="SD of a per-bank, per-feature multiplier on the feature's link to health (concept shift).",
    )
    profile_seed: int | None = Field(
        None,
        ge=0,
        lt=2**32,
        description="Seed of the banks' profiles (shares, portfolios, policy, measurement): the same lenders in "
        "every seed; empty = drawn from each seed.",
    )
    label_dpd: list[Literal[30, 60, 90]] = Field(
        default_factory=lambda: [90],
        min_length=1,
        max_length=50,
        description="Days past due counted as default, bank by bank in turn (e.g. [90, 60]).",
    )

    def profile_rng(self, stream: int) -> np.random.Generator | None:
        """A generator for one kind of bank-profile draw when ``profile_seed`` is set, else None."""
        return None if self.profile_seed is None else np.random.default_rng([self.profile_seed, stream])

    def concentration(self, axis: str) -> float:
        """The Dirichlet concentration of one preference axis (``region``, ``sector`` or ``risk``)."""
        value = getattr(self, f"{axis}_concentration")
        return self.mix_concentration if value is None else value


class OutOfTimeKnobs(_Knobs):
    """A later application cohort whose macro shock and feature distributions drift (on by default: credit
    models are validated on later applicants; ``fraction = 0`` turns it off)."""

    fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Share of firms (and so applicants) in the out-of-time cohort."
    )
    drift: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Drift strength: macro downturn, sector rotation and feature shift of the later cohort.",
    )


class FactorCorrelation(_Knobs):
    """Correlations between the three hidden firm factors (must form a positive-definite matrix)."""

    financial_operating: float = Field(0.2, gt=-1.0, lt=1.0, description="corr(financial, operating health).")
    financial_chain: float = Field(
        0.1, gt=-1.0, lt=1.0, description="corr(financial health, chain position)."
    )
    operating_chain: float = Field(
        0.2, gt=-1.0, lt=1.0, description="corr(operating health, chain position)."
    )

    @model_validator(mode="after")
    def _positive_definite(self) -> FactorCorrelation:
        if np.linalg.eigvalsh(self.matrix()).min() <= 1e-6:
            raise ValueError(
                "the three correlations do not form a positive-definite matrix; make them smaller"
            )
        return self

    def matrix(self) -> np.ndarray:
        """The 3x3 correlation matrix in the order (financial, operating, chain)."""
        a, b, c = self.financial_operating, self.financial_chain, self.operating_chain
        return np.array([[1.0, a, b], [a, 1.0, c], [b, c, 1.0]])


class WorldConfig(_Knobs):
    """Everything that shapes a synthetic SME world; `generate_world(config, seed)` is a pure function of it.

    Parameters
    ----------
    n_firms : int
        Number of firms in the economy (applicants are the ``bank.coverage`` share of them).
    default_rate : float
        Target 12-month default rate over all development-cohort firms; the realised rate matches it within
        binomial sampling error (the out-of-time cohort drifts away from it on purpose).
    n_banks : int
        Number of banks; one gives a holder named ``"bank"``, more give ``"bank_1"``..``"bank_k"``.
    asset_correlation : float
        Vasicek asset correlation with the sector shock. The default 0.05 is near empirical SME estimates; Basel
        capital rules use a conservative 0.12-0.24, which makes sector a much stronger (and noisier) signal.
    factors : FactorCorrelation
        Correlations between financial health, operating health and supply-chain position.
    mnar_strength : float
        How much worse health raises the log-odds of a field being missing (0 = missing completely at random).
    bank, tax, supply_chain : HolderKnobs subclasses
        Per-holder coverage, signal, noise and missingness.
    banks : MultiBankKnobs
        Multi-bank lending and heterogeneity (used when ``n_banks > 1``).
    out_of_time : OutOfTimeKnobs
        Later cohort with drift (a fifth of the firms by default).
    """

    n_firms: int = Field(30_000, ge=100, le=20_000_000, description="Number of firms in the economy.")
    default_rate: float = Field(
        0.06, gt=0.001, lt=0.5, description="Target 12-month default rate of development-cohort firms."
    )
    n_banks: int = Field(1, ge=1, le=50, description="Number of banks (label holders).")
    asset_correlation: float = Field(
        0.05, ge=0.0, le=0.5, description="Vasicek asset correlation with the sector shock."
    )
    factors: FactorCorrelation = Field(
        default_factory=FactorCorrelation, description="Correlations between the hidden firm factors."
    )
    mnar_strength: float = Field(
        0.6, ge=0.0, le=5.0, description="Log-odds increase of missingness per SD of worse health (MNAR)."
    )
    bank: BankKnobs = Field(default_factory=BankKnobs, description="The bank(s): applicants and their data.")
    tax: TaxKnobs = Field(default_factory=TaxKnobs, description="The tax authority's coverage and data.")
    supply_chain: ChainKnobs = Field(
        default_factory=ChainKnobs, description="The supply-chain platform and the trading graph."
    )
    banks: MultiBankKnobs = Field(
        default_factory=MultiBankKnobs, description="Multi-bank lending and heterogeneity across banks."
    )
    out_of_time: OutOfTimeKnobs = Field(
        default_factory=OutOfTimeKnobs, description="Out-of-time cohort with drift (on by default)."
    )

    @property
    def bank_names(self) -> list[str]:
        """Holder names of the banks, in bank-index order."""
        return ["bank"] if self.n_banks == 1 else [f"bank_{b + 1}" for b in range(self.n_banks)]
