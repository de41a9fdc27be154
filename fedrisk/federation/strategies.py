"""Flower's strategies by the name a config uses, and the check of their parameters against Flower's signature.

The config layer knows only the names (it must not import Flower); this module maps them to classes and
checks ``federation.horizontal.strategy_params`` before any work starts (the runner calls `check_params`).
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from flwr.server import strategy as flwr_strategy
from pydantic import TypeAdapter, ValidationError

from fedrisk.config.horizontal import STRATEGY_NAMES, HorizontalConfig
from fedrisk.core.errors import FedriskError

STRATEGY_CLASSES: dict[str, type] = {
    "fedavg": flwr_strategy.FedAvg,
    "fedprox": flwr_strategy.FedProx,
    "fedavgm": flwr_strategy.FedAvgM,
    "fedadam": flwr_strategy.FedAdam,
    "fedyogi": flwr_strategy.FedYogi,
    "fedadagrad": flwr_strategy.FedAdagrad,
    "fedmedian": flwr_strategy.FedMedian,
    "fedtrimmedavg": flwr_strategy.FedTrimmedAvg,
    "krum": flwr_strategy.Krum,
    "bulyan": flwr_strategy.Bulyan,
}
assert set(STRATEGY_CLASSES) == set(STRATEGY_NAMES)

FRAMEWORK_PARAMS = frozenset(
    {
        "fraction_fit",
        "fraction_evaluate",
        "min_fit_clients",
        "min_evaluate_clients",
        "min_available_clients",
        "evaluate_fn",
        "on_fit_config_fn",
        "on_evaluate_config_fn",
        "accept_failures",
        "initial_parameters",
        "fit_metrics_aggregation_fn",
        "evaluate_metrics_aggregation_fn",
        "inplace",
    }
)
"""Strategy arguments fedrisk sets itself (from the section's own fields or from the data)."""


def strategy_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The user-settable constructor parameters of a registered strategy (Flower's own signature)."""
    signature = inspect.signature(STRATEGY_CLASSES[name].__init__)
    return {
        p.name: p
        for p in signature.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and p.name not in FRAMEWORK_PARAMS
        and "Callable" not in str(p.annotation)  # functions cannot come from a TOML file
    }


def _check_strategy_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate names and types against Flower's signature; return the coerced values."""
    allowed = strategy_parameters(name)
    hints = typing.get_type_hints(STRATEGY_CLASSES[name].__init__)
    checked = {}
    for key, value in params.items():
        if key not in allowed:
            valid = ", ".join(sorted(allowed)) or "(none)"
            raise FedriskError(
                f"federation.horizontal.strategy_params.{key}",
                f"not a parameter of Flower's {STRATEGY_CLASSES[name].__name__}",
                f"use one of: {valid}",
            )
        try:
            checked[key] = TypeAdapter(hints[key]).validate_python(value) if key in hints else value
        except ValidationError as exc:
            raise FedriskError(
                f"federation.horizontal.strategy_params.{key}",
                f"{value!r} is not a valid {hints[key]} ({exc.errors()[0]['msg']})",
                "give a value of that type",
            ) from None
    return checked


def check_params(horizontal: HorizontalConfig) -> HorizontalConfig:
    """``horizontal`` with its strategy parameters checked and coerced (a FedriskError names a bad one)."""
    horizontal.strategy_params = _check_strategy_params(horizontal.strategy, dict(horizontal.strategy_params))
    return horizontal
