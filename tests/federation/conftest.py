"""Fixtures for the federation plumbing tests: tiny party tables on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedrisk  # noqa: F401 - sets Flower's environment before flwr is imported
from fedrisk.data.table import PartyTable
from fedrisk.federation.nodes import clear_table_cache, write_party_table

W_TRUE = np.array([1.5, -2.0])


def make_table(name: str, n: int, seed: int, label: bool = False) -> PartyTable:
    """A party's table: two numeric features, a regression target, a category column, NaNs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    sector = pd.Categorical(rng.choice(["retail", "manufacturing", "services"], size=n))
    noisy = rng.normal(size=n)
    noisy[::4] = np.nan
    features = pd.DataFrame(
        {"x1": x[:, 0], "x2": x[:, 1], "y": x @ W_TRUE, "sector": sector, "revenue": noisy}
    )
    return PartyTable(
        name=name,
        ids=np.array([f"{name}-{i:04d}" for i in range(n)]),
        features=features,
        label=rng.integers(0, 2, size=n).astype(np.int8) if label else None,
        cohort=(np.arange(n) % 5 == 0).astype(np.int8) if label else None,
        meta={"seed": seed},
    )


def write_parties(directory: Path, names: list[str], n: int = 40) -> dict[str, Path]:
    clear_table_cache()
    return {
        name: write_party_table(
            make_table(name, n + 7 * i, seed=i, label=name.startswith("bank")), directory / f"{name}.parquet"
        )
        for i, name in enumerate(names)
    }


@pytest.fixture(name="make_table")
def _make_table_fixture():
    """The table factory (a fixture, not an import: test directories each have a ``conftest``)."""
    return make_table


@pytest.fixture
def w_true() -> np.ndarray:
    """The weights every bank's regression target was made with."""
    return W_TRUE.copy()


@pytest.fixture
def vertical_parties(tmp_path: Path) -> dict[str, Path]:
    """bank (labelled), tax, supply_chain."""
    return write_parties(tmp_path / "data", ["bank", "tax", "supply_chain"])


@pytest.fixture
def bank_parties(tmp_path: Path):
    """``make(k)`` -> k labelled bank tables ``bank_1..bank_k``."""
    return lambda k: write_parties(tmp_path / "data", [f"bank_{i + 1}" for i in range(k)])
