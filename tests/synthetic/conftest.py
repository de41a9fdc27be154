"""Small synthetic worlds shared by the tests of this directory (generated once per session)."""

from __future__ import annotations

import pytest

from fedrisk.data.synthetic import World, WorldConfig, generate_world


@pytest.fixture(scope="session")
def world() -> World:
    """A default-knob world of 20,000 firms (about 14,000 applicants at one bank)."""
    return generate_world(WorldConfig(n_firms=20_000), seed=7)


@pytest.fixture(scope="session")
def multibank_world() -> World:
    """Four banks with multi-head lending and feature shift switched on."""
    config = WorldConfig(n_firms=12_000, n_banks=4, banks={"multi_head_rate": 0.2, "feature_shift": 0.3})
    return generate_world(config, seed=3)
