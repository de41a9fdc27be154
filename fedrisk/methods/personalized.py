"""The method ``personalized``: the global horizontal federation, then a personal model for every bank.

Scored like ``federated`` (each bank's own held-out applicants), so the two sit side by side per bank and
on average. A bank that cannot personalise (too few defaults to fine-tune or validate on) keeps the global
model: it is named in a warning and the fallback is recorded in the outcome (``extra.personalization``),
from where it reaches ``results.json``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from fedrisk.config import ExperimentConfig
from fedrisk.core.errors import FedriskError, FedriskWarning
from fedrisk.data.outcome import MethodOutcome
from fedrisk.data.setting import Setting

GBDT_IGNORED_PERSONAL = frozenset(
    {"epochs", "patience", "lr", "ditto_lambda", "clusters", "max_clusters", "cluster_rounds"}
)
"""``[federation.horizontal.personal]`` keys of the neural variants; refused, not ignored, with trees."""


class PersonalizationFallback(FedriskWarning):
    """A bank keeps the global model because it has too few defaults to personalise."""


def check_personalization(config: ExperimentConfig, topology: str) -> None:
    """Reject a personalisation that does not apply, before any work starts."""
    mode = config.federation.horizontal.personalization
    if mode != "none" and config.model.kind == "gbdt":
        if mode != "finetune":
            raise FedriskError(
                "federation.horizontal.personalization",
                f"'{mode}' pulls towards or averages network weights, which trees do not have",
                "use 'finetune' with model.kind = 'gbdt' (each bank boosts its own trees on the federated ones)",
            )
        personal = config.federation.horizontal.personal
        defaults = type(personal)()  # non-default values only: a re-validated full dump sets every field
        ignored = sorted(
            k
            for k in GBDT_IGNORED_PERSONAL & personal.model_fields_set
            if getattr(personal, k) != getattr(defaults, k)
        )
        if ignored:
            raise FedriskError(
                f"federation.horizontal.personal.{ignored[0]}",
                "does not apply to trees (their number and early stopping follow model.n_trees and "
                "model.early_stopping_rounds)",
                f"remove {', '.join(ignored)} from [federation.horizontal.personal]",
            )
    if mode != "none" and topology != "horizontal":
        raise FedriskError(
            "federation.horizontal.personalization",
            f"'{mode}' personalises a horizontal federation, but this run is {topology}",
            "set it to 'none', or federate several banks (world.n_banks > 1 or several labelled tables)",
        )


def personalized_horizontal(
    config: ExperimentConfig, setting: Setting, seed: int, workdir: Path, backend=None
) -> MethodOutcome:
    """Global federation (as the method ``federated``), then the configured personalisation."""
    if config.model.kind == "gbdt":
        from fedrisk.methods.gbdt_personalized import personalized_gbdt

        return personalized_gbdt(config, setting, seed, workdir, backend=backend)
    from fedrisk.config.horizontal import HorizontalJob
    from fedrisk.federation.horizontal import PARTIES_DIR, SERVER_DIR, run_horizontal
    from fedrisk.federation.horizontal_client import bank_files
    from fedrisk.federation.personalization_driver import run_personalization

    hcfg = config.federation.horizontal
    backend = config.federation.backend if backend is None else backend
    workdir = Path(workdir)
    hidden, dropout = tuple(config.model.hidden), config.model.dropout
    fed = run_horizontal(
        setting.parties,
        setting.splits,
        config.model.kind,
        config.training,
        hcfg,
        backend,
        workdir,
        seed,
        hidden=hidden,
        dropout=dropout,
    )
    job = HorizontalJob(
        horizontal=hcfg,
        train=config.training,
        model_kind=config.model.kind,
        hidden=list(hidden),
        dropout=dropout,
        seed=seed,
    )
    party_dirs = {name: bank_files(workdir / PARTIES_DIR / name)[0].parent for name in setting.parties}
    personal = run_personalization(
        setting.parties, setting.splits, job, party_dirs, workdir / SERVER_DIR, backend, workdir / "personal"
    )
    for bank, report in sorted(personal.reports.items()):
        if report.get("fallback"):
            warnings.warn(
                f"federation.horizontal.personal.min_defaults: {bank} keeps the global model (seed {seed}): "
                f"{report['fallback']}",
                PersonalizationFallback,
                stacklevel=2,
            )
    cost = {
        "wall_seconds": fed.seconds + personal.seconds,
        "bytes_sent": fed.bytes_sent + personal.bytes_sent,
        "epsilon": fed.epsilon,
        "delta": fed.delta,
    }
    extra = {
        "personalization": {
            "mode": hcfg.personalization,
            "banks": personal.reports,
            "clusters": personal.clusters,
            "silhouette": personal.silhouette,
            "bytes_sent": personal.bytes_sent,
        },
        "privacy": fed.privacy,
    }
    return MethodOutcome(
        "personalized", personal.scores, fed.history, cost, train_scores=personal.train_scores, extra=extra
    )
