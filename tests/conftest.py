"""Shared fixtures: small tables on disk, and Flower/Ray state kept inside pytest's temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def pytest_configure(config):
    base = Path(os.environ.get("FEDRISK_TEST_HOME", "/tmp/fedrisk-test-home"))
    os.environ.setdefault("FEDRISK_HOME", str(base))
    os.environ.setdefault("FLWR_HOME", str(base / "flwr"))
    os.environ.setdefault("RAY_TMPDIR", str(base / "ray"))
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"


def make_vertical_tables(
    directory: Path, n: int = 4000, seed: int = 0, overlap: float = 0.7
) -> dict[str, Path]:
    """A tiny vertical world on disk: bank (label) + tax (partial overlap), with real signal in both."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"F{i:07d}" for i in range(n)])
    health = rng.normal(size=n)
    ops = rng.normal(size=n)
    logit = -3.0 - 1.0 * health - 1.0 * ops
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    bank = pd.DataFrame(
        {
            "firm_id": ids,
            "utilisation": health * -0.8 + rng.normal(size=n),
            "sector": rng.choice(["retail", "mfg", "agri"], size=n),
            "default": y,
        }
    )
    known = rng.random(n) < overlap
    tax = pd.DataFrame(
        {"firm_id": ids[known], "revenue_growth": ops[known] + 0.7 * rng.normal(size=known.sum())}
    )
    tax = pd.concat(
        [
            tax,
            pd.DataFrame({"firm_id": [f"X{i}" for i in range(300)], "revenue_growth": rng.normal(size=300)}),
        ]
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"bank": directory / "bank.csv", "tax": directory / "tax.parquet"}
    bank.to_csv(paths["bank"], index=False)
    tax.to_parquet(paths["tax"], index=False)
    return paths


def write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


VERTICAL_TABLES_CONFIG = """
name = "tiny_vertical"
seeds = [0, 1]

[data]
source = "tables"

[[data.parties]]
name = "bank"
path = "bank.csv"
id = "firm_id"
label = "default"

[[data.parties]]
name = "tax"
path = "tax.parquet"
id = "firm_id"

[training]
epochs = 8
batch_size = 512
lr = 0.05

[evaluation]
n_bootstrap = 50

[runner]
workers = 1
"""


@pytest.fixture
def vertical_tables(tmp_path: Path) -> Path:
    """A directory with bank.csv, tax.parquet and config.toml for a two-seed vertical run."""
    make_vertical_tables(tmp_path)
    write_config(tmp_path / "config.toml", VERTICAL_TABLES_CONFIG)
    return tmp_path
