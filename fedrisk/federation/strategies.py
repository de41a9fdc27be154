"""Flower's Message-API strategies by the name a config uses, their parameters checked, and their assembly.

The config layer knows only the names (it must not import Flower); this module maps them to the classes of
``flwr.serverapp.strategy``, checks ``federation.horizontal.strategy_params`` against Flower's own signature
before any work starts (the runner calls `check_params`), and builds the strategy a run uses, wrapped in
Flower's DP wrapper for the configured mode (`build_strategy`).
"""

from __future__ import annotations

import inspect
import math
import typing
from typing import Any

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategy
from pydantic import TypeAdapter, ValidationError

from fedrisk.config.horizontal import STRATEGY_NAMES, HorizontalConfig, HorizontalJob
from fedrisk.core.errors import FedriskError
from fedrisk.protocol.horizontal import WEIGHT_KEY

STRATEGY_CLASSES: dict[str, type[flwr_strategy.Strategy]] = {
    "fedavg": flwr_strategy.FedAvg,
    "fedprox": flwr_strategy.FedProx,
    "fedavgm": flwr_strategy.FedAvgM,
    "fedadam": flwr_strategy.FedAdam,
    "fedyogi": flwr_strategy.FedYogi,
    "fedadagrad": flwr_strategy.FedAdagrad,
    "fedmedian": flwr_strategy.FedMedian,
    "fedtrimmedavg": flwr_strategy.FedTrimmedAvg,
    "krum": flwr_strategy.Krum,
    "multikrum": flwr_strategy.MultiKrum,
    "bulyan": flwr_strategy.Bulyan,
}
assert set(STRATEGY_CLASSES) == set(STRATEGY_NAMES)

FRAMEWORK_PARAMS = frozenset(
    {
        "fraction_train",
        "fraction_evaluate",
        "min_train_nodes",
        "min_evaluate_nodes",
        "min_available_nodes",
        "weighted_by_key",
        "arrayrecord_key",
        "configrecord_key",
        "train_metrics_aggr_fn",
        "evaluate_metrics_aggr_fn",
    }
)
"""Strategy arguments fedrisk sets itself (from the section's own fields or from the data)."""


def strategy_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The user-settable constructor parameters of a registered strategy (Flower's own signature)."""
    signature = inspect.signature(STRATEGY_CLASSES[name].__init__)
    return {
        p.name: p
        for p in signature.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name != "self"
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


def weighted_mean(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """The replies' metrics averaged by their weights, each metric over the replies where it is finite.

    Flower's default (``aggregate_metricrecords``) would turn the whole mean into NaN when one bank
    cannot compute a metric (KS on a validation set with one class), so this replaces it.
    """
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for record in records:
        for metrics in record.metric_records.values():
            w = float(typing.cast(float, metrics[weight_key]))
            for key, value in metrics.items():
                if key == weight_key or not isinstance(value, int | float) or not math.isfinite(value):
                    continue
                totals[key] = totals.get(key, 0.0) + w * float(value)
                weights[key] = weights.get(key, 0.0) + w
    return MetricRecord({k: totals[k] / weights[k] for k in totals if weights[k] > 0})


def sample_sizes(hcfg: HorizontalConfig, n_banks: int) -> tuple[int, int]:
    """Banks sampled per training and per evaluation round: ``fraction * n_banks`` rounded, at least 1.

    Passed to Flower as ``min_train_nodes`` / ``min_evaluate_nodes``, which its strategies sample when
    that is more than ``int(fraction * n)``; the DP wrappers and the accountant use the same count.
    """
    n_train = max(1, round(hcfg.fraction_fit * n_banks))
    n_eval = max(1, round(hcfg.fraction_evaluate * n_banks)) if hcfg.fraction_evaluate > 0 else 0
    return n_train, n_eval


def build_strategy(job: HorizontalJob, n_banks: int) -> flwr_strategy.Strategy:
    """The registry's Flower strategy with the config's parameters, wrapped for DP when asked.

    Every sampled bank must answer: fedrisk's `RecordingGrid` stops the run on a failure instead of letting
    the strategy aggregate what is left.
    """
    hcfg = job.horizontal
    if n_banks < hcfg.min_clients():
        raise FedriskError(
            "federation.horizontal.strategy",
            f"'{hcfg.strategy}' with these settings needs at least {hcfg.min_clients()} banks, got {n_banks}",
            "use more banks or another strategy",
        )
    n_train, n_eval = sample_sizes(hcfg, n_banks)
    if hcfg.secagg.enabled and n_train < 3:
        raise FedriskError(
            "federation.horizontal.fraction_fit",
            f"samples {n_train} banks per round",
            "SecAgg+ needs at least 3",
        )
    strategy = STRATEGY_CLASSES[hcfg.strategy](
        fraction_train=hcfg.fraction_fit,
        fraction_evaluate=hcfg.fraction_evaluate,
        min_train_nodes=n_train,
        min_evaluate_nodes=n_eval,
        min_available_nodes=n_banks,
        weighted_by_key=WEIGHT_KEY,
        train_metrics_aggr_fn=weighted_mean,
        evaluate_metrics_aggr_fn=weighted_mean,
        **hcfg.strategy_params,
    )
    dp = hcfg.dp
    if not dp.active:
        return strategy
    z = float(job.noise_multiplier or 0.0)
    try:
        if dp.mode == "server-fixed":
            return flwr_strategy.DifferentialPrivacyServerSideFixedClipping(
                strategy, z, dp.clipping_norm, n_train
            )
        if dp.mode == "client-fixed":
            return flwr_strategy.DifferentialPrivacyClientSideFixedClipping(
                strategy, z, dp.clipping_norm, n_train
            )
        adaptive = {
            "initial_clipping_norm": dp.clipping_norm,
            "target_clipped_quantile": dp.target_clipped_quantile,
            "clip_norm_lr": dp.clip_norm_lr,
            "clipped_count_stddev": dp.clipped_count_stddev,
        }
        if dp.mode == "server-adaptive":
            return flwr_strategy.DifferentialPrivacyServerSideAdaptiveClipping(
                strategy, z, n_train, **adaptive
            )
        if dp.mode == "client-adaptive":
            return flwr_strategy.DifferentialPrivacyClientSideAdaptiveClipping(
                strategy, z, n_train, **adaptive
            )
    except ValueError as exc:
        raise FedriskError(
            "federation.horizontal.dp",
            f"Flower's {dp.mode} DP wrapper rejects these settings ({exc})",
            "adjust clipped_count_stddev / noise_multiplier as the message says",
        ) from None
    return strategy  # "local": the noise is added by each bank's LocalDpMod
