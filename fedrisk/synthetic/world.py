"""Generate a synthetic multi-holder SME world: the ground truth and each holder's own table.

Order of generation (each step vectorised over all firms):
traits -> hidden factors -> trading graph and contagion -> applicants and their banks -> cohorts and sector
shocks -> risk index, calibrated PD and realised default -> each holder's view, coverage and missingness.
Every component draws from its own child of ``SeedSequence(seed)``, so the same seed gives identical tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedrisk.parties.table import PartyTable
from fedrisk.synthetic.bank_view import BANK_NUMERIC_FEATURES, bank_features
from fedrisk.synthetic.chain_view import CHAIN_NUMERIC_FEATURES, chain_features
from fedrisk.synthetic.config import WorldConfig
from fedrisk.synthetic.coverage import mask_missing, select_share
from fedrisk.synthetic.factors import (
    MACRO_DOWNTURN,
    calibrate_intercept,
    draw_defaults,
    draw_hidden_factors,
    draw_sector_shocks,
    pd_from_threshold,
    point_in_time_pd,
)
from fedrisk.synthetic.graph import TradingGraph, build_trading_graph, propagate_health
from fedrisk.synthetic.lending import Lending, draw_lending
from fedrisk.synthetic.state import FirmState
from fedrisk.synthetic.tax_view import TAX_NUMERIC_FEATURES, tax_features
from fedrisk.synthetic.traits import REGION_TYPE_NAMES, SECTOR_NAMES, SECTORS, draw_traits

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
    rngs = dict(
        zip(
            _STREAMS,
            (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(_STREAMS))),
            strict=True,
        )
    )
    chain_knobs = config.supply_chain
    n = config.n_firms

    traits = draw_traits(n, chain_knobs.core_fraction, rngs["traits"])
    factors = draw_hidden_factors(n, config.factors.matrix(), rngs["factors"])
    own_health = factors.composite()
    graph = build_trading_graph(
        traits.is_core,
        traits.size_class,
        chain_knobs.mean_buyers,
        chain_knobs.attractiveness_tail,
        rngs["graph"],
    )
    buyer_health = propagate_health(graph, own_health, chain_knobs.contagion, chain_knobs.contagion_steps)
    chain_health = (
        np.sqrt(1 - chain_knobs.contagion) * factors.chain_position
        + np.sqrt(chain_knobs.contagion) * buyer_health
    )

    applicant_weight = np.where(traits.is_core, -np.inf, 0.3 * traits.size_class)
    applicant = select_share(applicant_weight, config.bank.coverage, rngs["lending"])
    lending = draw_lending(
        applicant,
        factors.financial,
        own_health,
        [(traits.region_type, len(REGION_TYPE_NAMES)), (traits.sector, len(SECTOR_NAMES))],
        config.n_banks,
        config.banks,
        rngs["lending"],
    )

    cohort = (rngs["cohort"].random(n) < config.out_of_time.fraction).astype(np.int8)
    shocks = draw_sector_shocks(len(SECTOR_NAMES), config.out_of_time.drift, rngs["cohort"])
    shock = shocks[cohort, traits.sector]
    state = FirmState(
        traits, factors, graph, buyer_health, chain_health, drift=config.out_of_time.drift * cohort
    )

    hhi = graph.buyer_hhi
    risk = (
        traits.base_risk()
        - config.bank.signal * factors.financial
        - config.tax.signal * factors.operating
        - chain_knobs.signal * chain_health
        + chain_knobs.concentration_risk * _zscore(hhi, ~traits.is_core)
        + config.banks.multi_head_risk * np.maximum(lending.n_lenders - 1, 0)
        + MACRO_DOWNTURN * state.drift  # the out-of-time cohort's downturn (0 for development firms)
    )
    rho = config.asset_correlation
    development = cohort == 0
    alpha = calibrate_intercept(risk[development], shock[development], rho, config.default_rate)
    threshold = alpha + risk
    default = draw_defaults(threshold, shock, rho, rngs["outcome"])

    young = traits.age_years < 1.0  # the few firms the tax office misses are mostly newly registered
    in_tax = select_share(np.where(young, -1.5, 0.0), config.tax.coverage, rngs["tax"])
    platform_propensity = np.log(np.array([v[2] for v in SECTORS.values()])[traits.sector]) + 0.5 * np.log1p(
        graph.n_buyers + graph.n_suppliers
    )
    in_chain = select_share(platform_propensity, chain_knobs.coverage, rngs["chain"])

    parties = _bank_tables(config, state, lending, default, cohort, rngs)
    parties["tax"] = _partner_table(
        "tax",
        np.flatnonzero(in_tax),
        state,
        lambda rows: tax_features(state, rows, config.tax.noise, rngs["tax"]),
        TAX_NUMERIC_FEATURES,
        -factors.operating,
        config.tax.missing_rate,
        config,
        rngs,
    )
    parties["supply_chain"] = _partner_table(
        "supply_chain",
        np.flatnonzero(in_chain),
        state,
        lambda rows: chain_features(state, rows, chain_knobs.noise, rngs["chain"]),
        CHAIN_NUMERIC_FEATURES,
        -chain_health,
        chain_knobs.missing_rate,
        config,
        rngs,
    )

    bank_names = np.array(config.bank_names)
    firms = pd.DataFrame(
        {
            "firm_id": traits.firm_id,
            **{
                name: traits.categorical(name) for name in ("sector", "region_type", "province", "size_class")
            },
            "age_years": traits.age_years,
            "is_core": traits.is_core,
            "financial_health": factors.financial,
            "operating_health": factors.operating,
            "chain_position": factors.chain_position,
            "buyer_health": buyer_health,
            "chain_health": chain_health,
            "sector_shock": shock,
            "risk_index": risk,
            "pd": pd_from_threshold(threshold),
            "pd_pit": point_in_time_pd(threshold, shock, rho),
            "default_12m": default.astype(np.int8),
            "cohort": cohort,
            "is_applicant": applicant,
            "n_banks": lending.n_lenders,
            "primary_bank": pd.Categorical.from_codes(lending.primary_bank(), categories=config.bank_names),
            "in_tax": in_tax,
            "in_supply_chain": in_chain,
            "tier_to_core": graph.tier,
            "n_buyers": graph.n_buyers.astype(np.int64),
            "n_suppliers": graph.n_suppliers,
            "buyer_hhi": hhi,
        }
    )
    is_primary = np.ones(len(lending.firm), dtype=bool)
    is_primary[1:] = lending.firm[1:] != lending.firm[:-1]
    lending_table = pd.DataFrame(
        {
            "firm_id": traits.firm_id[lending.firm],
            "bank": pd.Categorical.from_codes(lending.bank, categories=list(bank_names)),
            "is_primary": is_primary,
        }
    )
    return World(config=config, seed=seed, parties=parties, firms=firms, lending=lending_table, graph=graph)


def _bank_tables(
    config: WorldConfig,
    state: FirmState,
    lending: Lending,
    default: np.ndarray,
    cohort: np.ndarray,
    rngs: dict[str, np.random.Generator],
) -> dict[str, PartyTable]:
    """One labelled table per bank, each bank's rows in its own random order."""
    features = bank_features(
        state,
        lending.firm,
        lending.bank,
        config.bank.noise,
        config.banks.feature_shift if config.n_banks > 1 else 0.0,
        config.n_banks,
        rngs["bank"],
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
        rows = rows[rngs["order"].permutation(len(rows))]
        firms = lending.firm[rows]
        tables[name] = PartyTable(
            name=name,
            ids=state.traits.firm_id[firms],
            features=features.iloc[rows].reset_index(drop=True),
            label=default[firms].astype(np.int8),
            cohort=cohort[firms],
            meta={"role": "bank", "bank_index": b},
        )
    return tables


def _partner_table(
    name: str,
    firms: np.ndarray,
    state: FirmState,
    make_features,
    numeric_columns: list[str],
    badness: np.ndarray,
    missing_rate: float,
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


def _zscore(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Standardise over ``mask``; entries outside it become 0."""
    out = np.zeros_like(values, dtype=float)
    chosen = values[mask]
    out[mask] = (chosen - chosen.mean()) / max(chosen.std(), 1e-12)
    return out
