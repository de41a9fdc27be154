"""`model.kind = "gbdt"` for every method and topology: xgboost baselines, federated trees on Flower."""

from __future__ import annotations

from pathlib import Path

from fedrisk.core.errors import FedriskError
from fedrisk.data.outcome import MethodOutcome
from fedrisk.data.setting import Setting, build_parties, coverage_segments
from fedrisk.models.gbdt import GBDTParams


def run_gbdt_method(method: str, config, setting: Setting, seed: int, workdir: Path) -> MethodOutcome:
    """siloed / centralized: xgboost-cpu; federated: SecureBoost (vertical) or summed histograms (horizontal)."""
    from fedrisk.methods import gbdt_baselines, gbdt_federated

    params = GBDTParams.from_config(config.model)
    if setting.topology == "vertical":
        segments = coverage_segments(setting)
        if method == "siloed":
            return gbdt_baselines.siloed_vertical(setting, params, segments)
        if method == "centralized":
            return gbdt_baselines.centralized_vertical(setting, params, segments)
        return gbdt_federated.federated_vertical(config, setting, seed, workdir, segments)
    if method == "siloed":
        return gbdt_baselines.siloed_horizontal(setting, params)
    if method == "centralized":
        return gbdt_baselines.centralized_horizontal(setting, params)
    return gbdt_federated.federated_horizontal(config, setting, seed, workdir)


def check_categorical_levels(config) -> None:
    """Preflight: a categorical column with more levels than `model.max_bins` is refused before any output
    (the binning would refuse it mid-run). Levels are counted on the whole table (first seed's world)."""
    limit = config.model.max_bins
    for name, table in build_parties(config, config.seeds[0]).items():
        for column in table.categorical_columns():
            levels = table.features[column].nunique(dropna=True)
            if levels > limit:
                raise FedriskError(
                    "model.max_bins",
                    f"categorical column '{column}' of {name} has {levels} levels, more than model.max_bins = {limit}",
                    f"set model.max_bins >= {levels} or group rare levels of '{column}' before training",
                )


TREE_HORIZONTAL_KEYS = frozenset({"personalization", "personal"})
"""``[federation.horizontal]`` keys a horizontal tree run uses; the rest drive the neural FedAvg rounds."""


def check_horizontal_keys(config) -> None:
    """Preflight for a horizontal tree run: a strategy, round, SecAgg+ or DP key is refused, not ignored.

    Trees sum the banks' histograms in their own rounds (one per tree level); SecAgg+ and DP of those
    histograms are not built, and a user who set them must not believe they are on."""
    hcfg = config.federation.horizontal
    defaults = type(hcfg)()
    changed = [
        key
        for key in sorted(hcfg.model_fields_set - TREE_HORIZONTAL_KEYS)
        if getattr(hcfg, key) != getattr(defaults, key)
    ]
    if changed:
        raise FedriskError(
            f"federation.horizontal.{changed[0]}",
            "model.kind = 'gbdt' sums the banks' histograms in its own rounds; strategies, rounds, SecAgg+ "
            "and DP apply to logistic and MLP models",
            f"remove {', '.join(changed)} from [federation.horizontal], or use model.kind = 'logistic' / 'mlp'",
        )
