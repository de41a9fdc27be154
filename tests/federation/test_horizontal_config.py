"""HorizontalConfig: Flower strategies by name, parameters checked against Flower's signatures."""

from __future__ import annotations

from pathlib import Path

import pytest

import fedrisk  # noqa: F401  (Flower environment before flwr)
from fedrisk.config.experiment import validate
from fedrisk.config.horizontal import STRATEGY_NAMES, HorizontalConfig
from fedrisk.config.model import TrainConfig
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


def test_legacy_parameter_names_are_renamed_and_legacy_multikrum_is_multikrum():
    cfg = HorizontalConfig(
        strategy="krum", strategy_params={"num_malicious_clients": 1, "num_clients_to_keep": 3}
    )
    assert cfg.strategy == "multikrum"
    assert cfg.strategy_params == {"num_malicious_nodes": 1, "num_nodes_to_select": 3}
    assert cfg.min_clients() == 5
    plain = HorizontalConfig(strategy="krum", strategy_params={"num_malicious_clients": 2})
    assert plain.strategy == "krum" and check_params(plain).strategy_params == {"num_malicious_nodes": 2}


def test_server_side_dp_is_refused_under_secagg():
    message = _err({"secagg": {"enabled": True}, "dp": {"mode": "server-fixed", "noise_multiplier": 1.0}})
    assert "client-fixed" in message and "SecAgg+" in message
    assert HorizontalConfig(secagg={"enabled": True}, dp={"mode": "client-fixed", "noise_multiplier": 1.0})


def test_rounds_may_not_exceed_the_epochs_budget():
    train = TrainConfig(epochs=30, patience=5)
    assert HorizontalConfig(rounds=15, local_epochs=2).rounds_budget(train) == (15, 3)  # ceil(5 / 2)
    assert HorizontalConfig(rounds=20).rounds_budget(train.model_copy(update={"patience": 0})) == (20, 0)
    with pytest.raises(FedriskError) as info:
        HorizontalConfig(rounds=16, local_epochs=2).rounds_budget(train)
    assert "federation.horizontal.rounds" in str(info.value) and "training.epochs" in str(info.value)
    message = _err_with({"training": {"epochs": 10}, "federation": {"horizontal": {"rounds": 11}}})
    assert "federation.horizontal.rounds" in message and "32" not in message


def test_patience_needs_federated_evaluation():
    cfg = HorizontalConfig(fraction_evaluate=0.0, keep="last")
    with pytest.raises(FedriskError, match="training.patience"):
        cfg.rounds_budget(TrainConfig(patience=3))
    assert cfg.rounds_budget(TrainConfig(patience=0)) == (20, 0)


def test_vertical_and_tree_runs_do_not_check_the_horizontal_budget():
    preflight(validate({"topology": "vertical", "training": {"epochs": 5}}))  # rounds 20 > 5, not used
    trees = {"topology": "horizontal", "world": {"n_banks": 3}, "model": {"kind": "gbdt"}}
    preflight(validate(trees))
    with pytest.raises(FedriskError, match="training.epochs"):  # boosting rounds are the model's own
        validate({**trees, "training": {"epochs": 5}})


def _err_with(data: dict) -> str:
    with pytest.raises(FedriskError) as info:
        preflight(validate({"topology": "horizontal", **data}))
    return str(info.value)


def test_horizontal_modules_use_the_message_api_and_only_secagg_the_legacy_one():
    """Flower's legacy API (``flwr.server``, ``flwr.client``, ``flwr.compat``, ``flwr.common``) is imported
    by the SecAgg+ module only, which Flower 1.41 still needs for SecAgg+."""
    import ast
    import importlib

    legacy = ("flwr.server", "flwr.client", "flwr.compat", "flwr.common")
    for name in ("horizontal", "horizontal_client", "horizontal_server", "strategies", "attacks"):
        module = importlib.import_module(f"fedrisk.federation.{name}")
        tree = ast.parse(Path(module.__file__).read_text())
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m in legacy or m.startswith(tuple(f"{p}." for p in legacy))], name
