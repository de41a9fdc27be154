"""Generate a synthetic multi-holder SME world: the ground truth and each holder's own table.

Order of generation (each step vectorised over all firms):
traits -> hidden factors -> trading graph and contagion -> applicants and their banks -> cohorts and sector
shocks -> risk index, calibrated PD and realised default -> each holder's view, coverage and missingness.
Every component draws from its own child of ``SeedSequence(seed)``, so the same seed gives identical tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedrisk.config.world import WorldConfig
from fedrisk.core.errors import FedriskError
from fedrisk.data.synthetic.bank_view import BANK_NUMERIC_FEATURES, bank_features
from fedrisk.data.synthetic.chain_view import CHAIN_NUMERIC_FEATURES, chain_features
from fedrisk.data.synthetic.coverage import mask_missing, select_share
from fedrisk.data.synthetic.factors import (
    MACRO_DOWNTURN,
    Outcome,
    draw_hidden_factors,
    draw_outcome,
    draw_sector_shocks,
)
from fedrisk.data.synthetic.graph import TradingGraph, build_trading_graph, propagate_health, standardise
from fedrisk.data.synthetic.heterogeneity import (
    concept_multipliers,
    delinquency_labels,
    liquidity_squeeze,
    past_approvals,
)
from fedrisk.data.synthetic.lending import Lending, draw_lending
from fedrisk.data.synthetic.state import FirmState
from fedrisk.data.synthetic.tax_view import TAX_NUMERIC_FEATURES, tax_features
from fedrisk.data.synthetic.traits import REGION_TYPE_NAMES, SECTOR_NAMES, draw_traits
from fedrisk.data.table import PartyTable

_STREAMS = (
    "traits",
    "factors",
    "graph",
    "lending",
    "cohort",
    "outcome",
    "bank",
    "tax",
    "chain",
    "missing",
    "order",
    "hetero",  # appended last: earlier streams (and so default worlds) are unchanged by it
)


@dataclass
class World:
    """A generated world.

    Parameters
    ----------
    config : WorldConfig
        The knobs it was generated from.
    seed : int
        The seed it was generated from.
    parties : dict[str, PartyTable]
        Each holder's table: ``"bank"`` (or ``"bank_1"``..``"bank_k"``), ``"tax"``, ``"supply_chain"``.
        Rows are in each holder's own random order; only the firm ids can link them.
    firms : pd.DataFrame
        Ground truth, one row per firm (hidden factors, PD, outcome, segments, coverage flags). For
        evaluation and fairness analysis only, never for training.
    lending : pd.DataFrame
        One row per (firm, bank) relationship: ``firm_id``, ``bank`` (holder name), ``is_primary``.
    graph : TradingGraph or None
        The trading graph (rows/columns in ``firms`` order), for analysis of contagion.
    """

    config: WorldConfig
    seed: int
    parties: dict[str, PartyTable]
    firms: pd.DataFrame
    lending: pd.DataFrame = field(default_factory=pd.DataFrame)
    graph: TradingGraph | None = None

    @property
    def bank_names(self) -> list[str]:
        """Names of the label-holding banks."""
        return self.config.bank_names


def generate_world(config: WorldConfig, seed: int) -> World:
    """Generate the world for ``config`` and ``seed`` (a pure function: same inputs, identical tables)."""
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    rngs = {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children, strict=True)}

    state, lending = _economy(config, rngs)
    outcome = _outcome(config, state, lending, rngs)
    young = state.traits.age_years < 1.0  # the few firms the tax office misses are mostly newly registered
    in_tax = select_share(np.where(young, -1.5, 0.0), config.tax.coverage, rngs["tax"])
    platform_weight = state.traits.platform_affinity() + 0.5 * np.log1p(
        state.graph.n_buyers + state.graph.n_suppliers
    )
    in_chain = select_share(platform_weight, config.supply_chain.coverage, rngs["chain"])

    labels = delinquency_labels(
        outcome,
        liquidity_squeeze(state.factors.operating, rngs["hetero"]),
        state.cohort == 0,
        config.banks.label_dpd if config.n_banks > 1 else [90],
    )
    parties = _bank_tables(config, state, lending, labels, rngs)
    parties["tax"] = _partner_table(
        "tax",
        np.flatnonzero(in_tax),
        lambda rows: tax_features(state, rows, config.tax.noise, rngs["tax"]),
        TAX_NUMERIC_FEATURES,
        -state.factors.operating,
        config.tax.missing_rate,
        state,
        config,
        rngs,
    )
    parties["supply_chain"] = _partner_table(
        "supply_chain",
        np.flatnonzero(in_chain),
        lambda rows: chain_features(state, rows, config.supply_chain.noise, rngs["chain"]),
        CHAIN_NUMERIC_FEATURES,
        -state.chain_health,
        config.supply_chain.missing_rate,
        state,
        config,
        rngs,
    )
    coverage = {"is_applicant": lending.n_lenders > 0, "in_tax": in_tax, "in_supply_chain": in_chain}
    return World(
        config=config,
        seed=seed,
        parties=parties,
        firms=_truth_table(config, state, lending, outcome, coverage).assign(
            **{f"default_{dpd}dpd": labels[dpd].astype(np.int8) for dpd in sorted(labels) if dpd != 90}
        ),
        lending=_lending_table(config, state, lending),
        graph=state.graph,
    )


def _economy(config: WorldConfig, rngs: dict[str, np.random.Generator]) -> tuple[FirmState, Lending]:
    """Firms, hidden factors, trading graph with contagion, cohorts, and who borrows where."""
    chain = config.supply_chain
    n = config.n_firms
    traits = draw_traits(n, chain.core_fraction, rngs["traits"])
    factors = draw_hidden_factors(n, config.factors.matrix(), rngs["factors"])
    graph = build_trading_graph(
        traits.is_core, traits.size_class, chain.mean_buyers, chain.attractiveness_tail, rngs["graph"]
    )
    buyer_health = propagate_health(graph, factors.composite(), chain.contagion, chain.contagion_steps)
    chain_health = (
        np.sqrt(1 - chain.contagion) * factors.chain_position + np.sqrt(chain.contagion) * buyer_health
    )
    cohort = (rngs["cohort"].random(n) < config.out_of_time.fraction).astype(np.int8)
    state = FirmState(
        traits, factors, graph, buyer_health, chain_health, cohort, config.out_of_time.drift * cohort
    )

    # core enterprises are not SME applicants; bigger SMEs borrow a little more often
    applicant_weight = np.where(traits.is_core, -np.inf, 0.3 * traits.size_class)
    applicant = select_share(applicant_weight, config.bank.coverage, rngs["lending"])
    segments = [
        (traits.region_type, len(REGION_TYPE_NAMES), config.banks.concentration("region")),
        (traits.sector, len(SECTOR_NAMES), config.banks.concentration("sector")),
    ]
    lending = draw_lending(
        applicant,
        factors.financial,
        factors.composite(),
        segments,
        config.n_banks,
        config.banks,
        rngs["lending"],
    )
    return state, lending


def _outcome(
    config: WorldConfig, state: FirmState, lending: Lending, rngs: dict[str, np.random.Generator]
) -> Outcome:
    """Risk index from traits and hidden factors, intercept calibrated on the development cohort, defaults."""
    chain = config.supply_chain
    factors = state.factors
    not_core = ~state.traits.is_core
    risk = (
        state.traits.base_risk()
        - config.bank.signal * factors.financial
        - config.tax.signal * factors.operating
        - chain.signal * state.chain_health
        + chain.concentration_risk * standardise(state.graph.buyer_hhi, not_core)
        + config.banks.multi_head_risk * np.maximum(lending.n_lenders - 1, 0)
        + MACRO_DOWNTURN * state.drift  # the out-of-time cohort's downturn (0 for development firms)
    )
    shocks = draw_sector_shocks(len(SECTOR_NAMES), config.out_of_time.drift, rngs["cohort"])
    shock = shocks[state.cohort, state.traits.sector]
    development = state.cohort == 0
    if not development.any():  # a tiny world drew every firm into the later cohort
        development = np.ones_like(development)
    return draw_outcome(
        risk, shock, config.asset_correlation, config.default_rate, development, rngs["outcome"]
    )


def _truth_table(
    config: WorldConfig, state: FirmState, lending: Lending, outcome: Outcome, coverage: dict[str, np.ndarray]
) -> pd.DataFrame:
    """One row per firm: traits, hidden factors, PD and outcome, lending and coverage (never for training)."""
    traits, graph = state.traits, state.graph
    return pd.DataFrame(
        {
            "firm_id": traits.firm_id,
            **{
                name: traits.categorical(name) for name in ("sector", "region_type", "province", "size_class")
            },
            "age_years": traits.age_years,
            "is_core": traits.is_core,
            "financial_health": state.factors.financial,
            "operating_health": state.factors.operating,
            "chain_position": state.factors.chain_position,
            "buyer_health": state.buyer_health,
            "chain_health": state.chain_health,
            "sector_shock": outcome.shock,
            "risk_index": outcome.risk,
            "pd": outcome.pd,
            "pd_pit": outcome.pd_pit,
            "default_12m": outcome.default.astype(np.int8),
            "cohort": state.cohort,
            "n_banks": lending.n_lenders,
            "primary_bank": pd.Categorical.from_codes(lending.primary_bank(), categories=config.bank_names),
            **coverage,
            "tier_to_core": graph.tier,
            "n_buyers": graph.n_buyers.astype(np.int64),
            "n_suppliers": graph.n_suppliers,
            "buyer_hhi": graph.buyer_hhi,
        }
    )


def _lending_table(config: WorldConfig, state: FirmState, lending: Lending) -> pd.DataFrame:
    """One row per (firm, bank) relationship; a firm's first relationship is its primary bank."""
    is_primary = np.ones(len(lending.firm), dtype=bool)
    is_primary[1:] = lending.firm[1:] != lending.firm[:-1]
    return pd.DataFrame(
        {
            "firm_id": state.traits.firm_id[lending.firm],
            "bank": pd.Categorical.from_codes(lending.bank, categories=config.bank_names),
            "is_primary": is_primary,
        }
    )


def _bank_tables(
    config: WorldConfig,
    state: FirmState,
    lending: Lending,
    labels: dict[int, np.ndarray],
    rngs: dict[str, np.random.Generator],
) -> dict[str, PartyTable]:
    """One labelled table per bank (its own default definition), each bank's rows in its own random order."""
    several = config.n_banks > 1
    concept = concept_multipliers(
        config.n_banks,
        len(BANK_NUMERIC_FEATURES),
        config.banks.concept_shift if several else 0.0,
        config.banks.profile_rng(3) or rngs["hetero"],
    )
    features = bank_features(
        state,
        lending.firm,
        lending.bank,
        config.bank.noise,
        config.banks.feature_shift if several else 0.0,
        config.n_banks,
        rngs["bank"],
        concept,
        config.banks.profile_rng(2),
    )
    approved = past_approvals(
        state.factors.financial[lending.firm],
        lending.bank,
        config.n_banks,
        config.bank.past_approval_rate,
        rngs["hetero"],
    )
    features = mask_missing(
        features,
        BANK_NUMERIC_FEATURES,
        -state.factors.financial[lending.firm],
        config.bank.missing_rate,
        config.mnar_strength,
        rngs["missing"],
    )
    tables = {}
    for b, name in enumerate(config.bank_names):
        rows = np.flatnonzero(lending.bank == b)
        if len(rows) == 0:
            raise FedriskError(
                "world.n_banks",
                f"{name} drew no borrowers among {int((lending.n_lenders > 0).sum())} applicants",
                "use fewer banks, more firms, or a larger world.banks.size_concentration",
            )
        rows = rows[rngs["order"].permutation(len(rows))]
        firms = lending.firm[rows]
        dpd = config.banks.label_dpd[b % len(config.banks.label_dpd)] if several else 90
        tables[name] = PartyTable(
            name=name,
            ids=state.traits.firm_id[firms],
            features=features.iloc[rows].reset_index(drop=True),
            label=labels[dpd][firms].astype(np.int8),
            cohort=state.cohort[firms],
            approved=approved[rows],
            meta={"role": "bank", "bank_index": b, "label_dpd": dpd},
        )
    return tables


def _partner_table(
    name: str,
    firms: np.ndarray,
    make_features: Callable[[np.ndarray], pd.DataFrame],
    numeric_columns: list[str],
    badness: np.ndarray,
    missing_rate: float,
    state: FirmState,
    config: WorldConfig,
    rngs: dict[str, np.random.Generator],
) -> PartyTable:
    """An unlabelled holder's table over the firms it covers, in its own random order."""
    firms = firms[rngs["order"].permutation(len(firms))]
    features = mask_missing(
        make_features(firms),
        numeric_columns,
        badness[firms],
        missing_rate,
        config.mnar_strength,
        rngs["missing"],
    )
    return PartyTable(name=name, ids=state.traits.firm_id[firms], features=features, meta={"role": name})
