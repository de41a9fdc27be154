"""HorizontalConfig: Flower strategies by name, parameters checked against Flower's signatures."""

from __future__ import annotations

import pytest

import fedrisk  # noqa: F401  (Flower environment before flwr)
from fedrisk.config.experiment import validate
from fedrisk.config.horizontal import STRATEGY_NAMES, HorizontalConfig
from fedrisk.core.errors import FedriskError
from fedrisk.federation.strategies import check_params
from fedrisk.methods.registry import preflight


def _err(horizontal: dict) -> str:
    """The one-line error of a config, from the schema or from the pre-run checks (Flower's signatures)."""
    with pytest.raises(FedriskError) as info:
        preflight(validate({"federation": {"horizontal": horizontal}}))
    return str(info.value)


def test_unknown_strategy_lists_the_valid_ones():
    message = _err({"strategy": "fedsgd"})
    assert "federation.horizontal.strategy" in message
    for name in STRATEGY_NAMES:
        assert name in message


def test_unknown_strategy_parameter_lists_flowers_parameters():
    message = _err({"strategy": "fedadam", "strategy_params": {"learning_rate": 0.1}})
    assert "strategy_params" in message and "learning_rate" in message
    for param in ("eta", "eta_l", "beta_1", "beta_2", "tau"):
        assert param in message


def test_strategy_parameter_types_are_checked():
    assert "proximal_mu" in _err({"strategy": "fedprox", "strategy_params": {"proximal_mu": "strong"}})
    cfg = check_params(HorizontalConfig(strategy="FedProx", strategy_params={"proximal_mu": 1}))
    assert cfg.strategy == "fedprox" and cfg.strategy_params == {"proximal_mu": 1.0}


@pytest.mark.parametrize("shares", [2, 4, 10])
def test_even_num_shares_rejected_with_the_reason(shares):
    message = _err({"secagg": {"enabled": True, "num_shares": shares}})
    assert "federation.horizontal.secagg.num_shares" in message
    assert "odd" in message


def test_odd_or_fractional_shares_accepted():
    assert HorizontalConfig(secagg={"enabled": True, "num_shares": 5, "reconstruction_threshold": 3})
    assert HorizontalConfig(secagg={"enabled": True, "num_shares": 1.0, "reconstruction_threshold": 0.6})
    assert "reconstruction_threshold" in _err({"secagg": {"num_shares": 3, "reconstruction_threshold": 3}})


@pytest.mark.parametrize(
    "extra", [{"secagg": {"enabled": True}}, {"dp": {"mode": "server-fixed", "noise_multiplier": 1.0}}]
)
def test_robust_aggregators_refused_with_secagg_or_dp(extra):
    message = _err({"strategy": "fedmedian", **extra})
    assert "mean-based" in message and "fedavg" in message


def test_dp_needs_exactly_one_noise_source_unless_infinite():
    assert "exactly one" in _err({"dp": {"mode": "server-fixed"}})
    assert "exactly one" in _err({"dp": {"mode": "local", "noise_multiplier": 1.0, "target_epsilon": 3}})
    off = HorizontalConfig(dp={"mode": "server-fixed", "target_epsilon": "inf"})
    assert not off.dp.active
    assert HorizontalConfig(dp={"mode": "client-fixed", "target_epsilon": 3.0}).dp.active


def test_unknown_key_is_named():
    assert "unknown key" in _err({"round": 5})
