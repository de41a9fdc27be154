"""The methods the runner can run, by name: one call per (method, setting, seed)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from fedrisk.config import ExperimentConfig
from fedrisk.core.errors import FedriskError
from fedrisk.data.outcome import MethodOutcome
from fedrisk.data.setting import Setting, coverage_segments

METHODS = ("siloed", "centralized", "federated")


def run_method(
    method: str,
    config: ExperimentConfig,
    setting: Setting,
    seed: int,
    workdir: Path,
    backend: Any = None,
    *,
    psi_cache: Path | None = None,
) -> MethodOutcome:
    """One method on one setting. ``backend`` overrides ``federation.backend`` for the federated method: a name
    or a deployment `Engine` (the deployment engine is a transport of the same loop, not a loop of its own).
    ``psi_cache`` keeps the run's PSI alignment for its other seeds and tuning trials (vertical federated)."""
    from fedrisk.methods import baselines, tuning

    if tuning.needs_tuning(
        method, config
    ):  # the same (lr, weight decay) grid for siloed, centralized, federated
        run = functools.partial(run_method, psi_cache=psi_cache)
        return tuning.tuned(run, method, config, setting, seed, workdir, backend)
    if config.model.kind == "gbdt" and method in METHODS:
        from fedrisk.methods.gbdt import run_gbdt_method

        return run_gbdt_method(method, config, setting, seed, workdir)
    vertical = setting.topology == "vertical"
    holder = setting.label_holders[0]
    if method == "siloed":
        if vertical:
            segments = coverage_segments(setting)
            return baselines.siloed_vertical(
                setting.parties[holder], setting.splits[holder], config.model, config.training, seed, segments
            )
        return baselines.siloed_horizontal(
            setting.parties, setting.splits, config.model, config.training, seed
        )
    if method == "centralized":
        if vertical:
            # the federated model's pooled twin: same encoding, architecture, init, batches and stopping,
            # so federated vs centralized isolates what federation itself costs
            from fedrisk.federation.vertical import train_centralized_twin

            twin = train_centralized_twin(
                setting.parties,
                holder,
                setting.splits[holder],
                config.model.kind,
                config.training,
                config.federation.vertical,
                seed,
            )
            return twin.to_method_outcome("centralized", holder)
        return baselines.centralized_horizontal(
            setting.parties,
            setting.splits,
            config.model,
            config.training,
            seed,
            max_categories=config.federation.horizontal.max_categories,
        )
    if method in baselines.REFERENCE_MODELS:
        return baselines.reference_model(method, setting.parties, setting.label_holders, setting.splits, seed)
    if method == "federated":
        if vertical:
            from fedrisk.methods.federated import federated_vertical

            return federated_vertical(
                config,
                setting,
                seed,
                workdir,
                coverage_segments(setting),
                backend=backend,
                psi_cache=psi_cache,
            )
        from fedrisk.methods.federated import federated_horizontal

        return federated_horizontal(config, setting, seed, workdir, backend=backend)
    if method == "personalized":
        from fedrisk.methods.personalized import personalized_horizontal

        return personalized_horizontal(config, setting, seed, workdir, backend=backend)
    raise ValueError(f"unknown method {method!r}")


def methods_for(config: ExperimentConfig, methods: tuple[str, ...] = METHODS) -> tuple[str, ...]:
    """The methods a run computes: the three of the contract, plus ``personalized`` and scikit-learn
    references when asked."""
    extra: tuple[str, ...] = ()
    if config.federation.horizontal.personalization != "none" and methods == METHODS:
        extra += ("personalized",)
    if config.evaluation.reference_models and methods == METHODS:
        from fedrisk.methods.baselines import REFERENCE_MODELS

        extra += REFERENCE_MODELS
    return methods + extra


#: The synthetic world's partners beside its banks (`fedrisk.data.synthetic.generate_world`; a test keeps
#: the two in step), so ``data.partners`` is checked without generating a world.
SYNTHETIC_PARTNERS = ("tax", "supply_chain")


def preflight(config: ExperimentConfig, raw: dict | None = None) -> None:
    """Checks that need more than the schema (holders, tables, Flower's signatures), for every sweep point,
    before any output exists."""
    from fedrisk.config import sweep_points
    from fedrisk.data.setting import build_setting

    points = [point for _, point in sweep_points(config, raw)] if raw is not None else [config]
    for point in points:
        _check_partners(point)
    topology = config.topology
    if config.data.source == "tables":  # workers re-read the tables; bad ones fail here, in one line
        topology = build_setting(config, config.seeds[0]).topology
        protection = config.federation.vertical.protection
        if topology == "horizontal" and protection != "none":  # the schema cannot see the tables' labels
            raise FedriskError(
                "federation.vertical.protection",
                f"{protection!r} protects a vertical run's labels, but these tables make a horizontal run",
                "use protection = 'none' (horizontal runs have federation.horizontal.dp and secagg)",
            )
    elif topology == "auto":  # a synthetic world: one bank -> vertical, several -> horizontal
        topology = "horizontal" if config.world.n_banks > 1 else "vertical"
    if topology == "horizontal" and config.model.kind != "gbdt":  # trees boost in their own rounds
        # the federation's rounds within training.epochs; patience needs federated evaluation
        config.federation.horizontal.rounds_budget(config.training)
    from fedrisk.methods.personalized import check_personalization

    check_personalization(config, topology)
    from fedrisk.data.splits import check_accepted_only

    check_accepted_only(config.data.source, config.split.accepted_only)
    for point in points:
        if point.federation.horizontal.strategy_params:
            from fedrisk.federation.strategies import check_params

            check_params(point.federation.horizontal)
    if config.model.kind == "gbdt":
        from fedrisk.methods.gbdt import check_categorical_levels, check_horizontal_keys

        if topology == "horizontal":
            check_horizontal_keys(config)
        check_categorical_levels(config)


def _check_partners(config: ExperimentConfig) -> None:
    if config.data.partners is None:
        return
    if config.data.source == "tables":
        available = [p.name for p in config.data.parties if p.label is None]
    else:
        available = list(SYNTHETIC_PARTNERS)
    unknown = sorted(set(config.data.partners) - set(available))
    if unknown:
        raise FedriskError(
            "data.partners",
            f"unknown holders {unknown}",
            f"choose from {sorted(available)} (or leave it unset)",
        )
