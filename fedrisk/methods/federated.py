"""The runner's view of the two federated drivers: a `Setting` in, a `MethodOutcome` out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedrisk.data.outcome import MethodOutcome


def _backend(config):
    """``[federation] backend`` (and ``ray_address``) as the drivers take it."""
    from fedrisk.federation.backends import resolve_backend

    return resolve_backend(config.federation.backend, config.federation.ray_address)


def federated_vertical(
    config,
    setting,
    seed: int,
    workdir: Path,
    segments: dict[str, dict[str, np.ndarray]],
    backend=None,
    psi_cache: Path | None = None,
) -> MethodOutcome:
    """Vertical split learning after PSI alignment; the label holder keeps labels and the top model.

    ``backend`` overrides ``config.federation.backend`` (e.g. a deployment `Engine`, `fedrisk.federation.deploy`).
    ``psi_cache``: a directory where the alignment is kept, so the run's other seeds reuse it (it depends
    on the tables only); None runs PSI for this call.
    """
    from fedrisk.federation.vertical import run_vertical

    holder = setting.label_holders[0]
    vcfg = config.federation.vertical  # split-NN widths live here: bottoms and top differ from [model].hidden
    if config.runner.workers > 1 and vcfg.psi_parallel:
        # the runner already keeps both cores busy; parallel PSI on top would oversubscribe them
        vcfg = vcfg.model_copy(update={"psi_parallel": False})
    backend = _backend(config) if backend is None else backend
    alignment = None
    # an engine that aligns on the holders' own nodes keeps partners' ids away from this driver: no cache here
    if psi_cache is not None and not getattr(backend, "aligns_on_nodes", False):
        from fedrisk.protocol.psi_cache import cached_alignment, plan_order

        alignment = cached_alignment(
            psi_cache,
            holder,
            setting.parties[holder].ids,
            plan_order(setting.splits[holder]),
            {name: t.ids for name, t in setting.parties.items() if name != holder},
            seed=seed,
            parallel=vcfg.psi_parallel,
            fpr=vcfg.psi_fpr,
        )
    outcome = run_vertical(
        setting.parties,
        holder,
        setting.splits[holder],
        config.model.kind,
        config.training,
        vcfg,
        backend,
        workdir,
        seed,
        alignment=alignment,
    )
    return outcome.to_method_outcome("federated", holder)


def federated_horizontal(config, setting, seed: int, workdir: Path, backend=None) -> MethodOutcome:
    """Horizontal federation across banks with the configured Flower strategy, SecAgg+ and DP.

    ``backend`` overrides ``config.federation.backend`` (e.g. a deployment `Engine`, `fedrisk.federation.deploy`).
    """
    from fedrisk.federation.horizontal import run_horizontal

    outcome = run_horizontal(
        setting.parties,
        setting.splits,
        config.model.kind,
        config.training,
        config.federation.horizontal,
        _backend(config) if backend is None else backend,
        workdir,
        seed,
        hidden=tuple(config.model.hidden),
        dropout=config.model.dropout,
    )
    cost = {
        "wall_seconds": outcome.seconds,
        "bytes_sent": outcome.bytes_sent,
        "epsilon": outcome.epsilon,
        "delta": outcome.delta,
    }
    return MethodOutcome(
        "federated",
        outcome.scores,
        history=outcome.history,
        cost=cost,
        train_scores=outcome.train_scores,
        extra={"privacy": outcome.privacy},
    )
