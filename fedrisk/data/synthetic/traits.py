"""Observable firm traits (what a bank learns at KYC): sector, region, size, age, and the firm's USCC.

The structural tables below (sector mix and base risk, province weights) are stylised, not estimated: they
give the world plausible heterogeneity, and their risk offsets are small next to the hidden factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedrisk.data.synthetic.uscc import make_uscc

# name: (population share, base risk in probit units, propensity to trade on a supply-chain platform)
SECTORS: dict[str, tuple[float, float, float]] = {
    "manufacturing": (0.18, 0.00, 2.0),
    "wholesale": (0.16, 0.05, 1.6),
    "retail": (0.17, 0.10, 0.5),
    "construction": (0.08, 0.25, 1.0),
    "transport_logistics": (0.07, 0.10, 1.5),
    "agriculture": (0.06, 0.15, 0.8),
    "hospitality": (0.08, 0.22, 0.3),
    "it_services": (0.07, -0.10, 0.4),
    "business_services": (0.09, -0.02, 0.5),
    "real_estate_services": (0.04, 0.20, 0.4),
}
SECTOR_NAMES = list(SECTORS)

# province: (administrative division prefix, weight ~ number of registered firms)
PROVINCES: dict[str, tuple[int, float]] = {
    "beijing": (11, 4.0), "tianjin": (12, 1.5), "hebei": (13, 3.5), "shanxi": (14, 1.5),
    "inner_mongolia": (15, 1.0), "liaoning": (21, 2.0), "jilin": (22, 1.0), "heilongjiang": (23, 1.0),
    "shanghai": (31, 4.0), "jiangsu": (32, 8.0), "zhejiang": (33, 7.0), "anhui": (34, 3.5),
    "fujian": (35, 3.5), "jiangxi": (36, 2.0), "shandong": (37, 7.0), "henan": (41, 4.5),
    "hubei": (42, 3.0), "hunan": (43, 2.5), "guangdong": (44, 12.0), "guangxi": (45, 2.0),
    "hainan": (46, 0.8), "chongqing": (50, 2.0), "sichuan": (51, 4.0), "guizhou": (52, 1.5),
    "yunnan": (53, 1.5), "tibet": (54, 0.2), "shaanxi": (61, 2.0), "gansu": (62, 0.8),
    "qinghai": (63, 0.3), "ningxia": (64, 0.3), "xinjiang": (65, 1.0),
}  # fmt: skip
PROVINCE_NAMES = list(PROVINCES)

# region type: (share, base risk, last-two-digit range of the county code: urban districts vs counties)
REGION_TYPES: dict[str, tuple[float, float, tuple[int, int]]] = {
    "urban": (0.55, 0.0, (2, 20)),
    "county": (0.30, 0.06, (21, 30)),
    "rural": (0.15, 0.12, (21, 30)),
}
REGION_TYPE_NAMES = list(REGION_TYPES)

# size class: (share among SMEs, base risk, mean log age in years)
SIZE_CLASSES: dict[str, tuple[float, float, float]] = {
    "micro": (0.62, 0.12, 1.4),
    "small": (0.30, 0.0, 1.9),
    "medium": (0.08, -0.12, 2.3),
    "large": (0.0, -0.2, 2.8),  # only the core enterprises of the supply chains
}
SIZE_NAMES = list(SIZE_CLASSES)


@dataclass
class Traits:
    """Observable traits, one entry per firm (codes index the name lists above)."""

    firm_id: np.ndarray
    sector: np.ndarray
    province: np.ndarray
    region_type: np.ndarray
    size_class: np.ndarray
    age_years: np.ndarray
    is_core: np.ndarray

    def base_risk(self) -> np.ndarray:
        """Risk offset (probit units) of the observable traits: sector, region, size and youth."""
        sector = np.array([v[1] for v in SECTORS.values()])[self.sector]
        region = np.array([v[1] for v in REGION_TYPES.values()])[self.region_type]
        size = np.array([v[1] for v in SIZE_CLASSES.values()])[self.size_class]
        youth = 0.12 * np.clip(np.log(3.0 / self.age_years), -1.5, 2.0)
        return sector + region + size + youth

    def platform_affinity(self) -> np.ndarray:
        """Log relative propensity of each firm's sector to trade on a supply-chain platform."""
        return np.log(np.array([v[2] for v in SECTORS.values()]))[self.sector]

    def categorical(self, name: str) -> pd.Categorical:
        """A trait as a pandas Categorical with its full category list (stable across worlds and holders)."""
        names = {
            "sector": SECTOR_NAMES,
            "province": PROVINCE_NAMES,
            "region_type": REGION_TYPE_NAMES,
            "size_class": SIZE_NAMES,
        }[name]
        return pd.Categorical.from_codes(getattr(self, name), categories=names)


def draw_traits(n_firms: int, core_fraction: float, rng: np.random.Generator) -> Traits:
    """Draw the observable traits and unique USCC identifiers of ``n_firms`` firms.

    A ``core_fraction`` of firms (at least 3) are large core enterprises; the rest are micro/small/medium.
    """
    sector = _categorical_draw(rng, [v[0] for v in SECTORS.values()], n_firms)
    province = _categorical_draw(rng, [v[1] for v in PROVINCES.values()], n_firms)
    region_type = _categorical_draw(rng, [v[0] for v in REGION_TYPES.values()], n_firms)
    size_class = _categorical_draw(rng, [v[0] for v in SIZE_CLASSES.values()], n_firms)
    n_core = min(n_firms // 10, max(3, round(core_fraction * n_firms)))
    is_core = np.zeros(n_firms, dtype=bool)
    is_core[rng.choice(n_firms, size=n_core, replace=False)] = True
    size_class[is_core] = SIZE_NAMES.index("large")
    region_type[is_core] = REGION_TYPE_NAMES.index("urban")
    mean_log_age = np.array([v[2] for v in SIZE_CLASSES.values()])[size_class]
    age_years = np.round(np.clip(np.exp(rng.normal(mean_log_age, 0.7)), 0.25, 60.0), 2)

    prefix = np.array([v[0] for v in PROVINCES.values()])[province]
    low = np.array([v[2][0] for v in REGION_TYPES.values()])[region_type]
    high = np.array([v[2][1] for v in REGION_TYPES.values()])[region_type]
    city = rng.integers(1, 10, size=n_firms)
    county = rng.integers(low, high + 1)
    region_code = prefix * 10_000 + city * 100 + county
    serials = rng.choice(10**8, size=n_firms, replace=False)  # distinct bodies -> unique codes
    entity_type = np.where(rng.random(n_firms) < 0.03, 3, 1)  # a few farmers' cooperatives
    firm_id = make_uscc(region_code, serials, entity_type)
    return Traits(firm_id, sector, province, region_type, size_class, age_years, is_core)


def _categorical_draw(rng: np.random.Generator, weights: list[float], n: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum()).astype(np.int64)
