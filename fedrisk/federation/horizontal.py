"""The horizontal driver: several banks, one Flower federation, one global model scored bank by bank.

`run_horizontal` is what the runner calls. It writes each bank's training and validation rows to the
bank's own directory (its ClientApp reads nothing else; test applicants stay with the driver, which
plays the banks' scoring step), resolves the privacy budget with the accountant, runs the ServerApp and
ClientApp through `fedrisk.federation.backends.run_federation` (in-process or Ray), and scores every
bank's held-out applicants with the kept global model and the federated encoder.

`shared_preprocessor` gives the siloed and pooled baselines the federated encoder (same arithmetic,
no Flower), so that every method sees the same features.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.clientapp.typing import Mod

from fedrisk.config.horizontal import HorizontalConfig, HorizontalJob
from fedrisk.config.model import TrainConfig
from fedrisk.core.errors import FedriskError
from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey
from fedrisk.data.table import PartyTable
from fedrisk.federation.backends import read_completion, run_federation
from fedrisk.federation.horizontal_client import bank_files, build_client_app, set_weights
from fedrisk.federation.horizontal_secagg import secagg_workflow
from fedrisk.federation.horizontal_server import HISTORY_FILE, PREP_FILE, build_server_app, load_global_model
from fedrisk.federation.nodes import write_party_table
from fedrisk.federation.privacy import PrivacyBudget, budget_for
from fedrisk.federation.strategies import sample_sizes
from fedrisk.models.nets import make_model
from fedrisk.models.training import predict_proba
from fedrisk.protocol.federated_stats import FederatedPreprocessor, federated_preprocessor

SERVER_DIR = "server"
PARTIES_DIR = "parties"


@dataclass
class HorizontalOutcome(MethodOutcome):
    """The federated method's result for one seed (a `MethodOutcome` with privacy and cost spelled out).

    Parameters
    ----------
    scores : dict
        ``"<bank>/<split>"`` -> `ScoredSet` of the global model on that bank's held-out applicants
        (every split except ``train`` and ``val``).
    history : list of dict
        Per round run: ``round``, ``clients``, ``train_loss`` (None under DP), ``val_loss``, ``val_ks``
        (row-weighted means over banks), ``bytes_cumulative``, ``seconds``. ``extra`` says which round's
        model was kept, how many rounds ran and why the run stopped (``rounds`` or ``patience``).
    epsilon, delta : float or None
        The (ε, δ) the accountant reports for the run; None without DP.
    bytes_sent : int
        Everything on the wire, statistics round included.
    seconds : float
        Wall time of the federation (writing tables and scoring included).
    """

    method: str = "federated"
    scores: dict[str, ScoredSet] = field(default_factory=dict)
    epsilon: float | None = None
    delta: float | None = None
    bytes_sent: int = 0
    seconds: float = 0.0
    privacy: dict = field(default_factory=dict)
    preprocessor: FederatedPreprocessor | None = None


def _positions(table: PartyTable, ids: np.ndarray) -> np.ndarray:
    pos = pd.Index(table.ids).get_indexer(ids)
    if (pos < 0).any():
        raise FedriskError(f"splits.{table.name}", f"{int((pos < 0).sum())} ids are not in the bank's table")
    return pos


def _check_banks(banks: Mapping[str, PartyTable], splits: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    if len(banks) < 2:
        raise FedriskError(
            "world.n_banks", f"{len(banks)} bank(s)", "horizontal federation needs at least 2 banks"
        )
    for name, bank in banks.items():
        if bank.label is None:
            raise FedriskError(
                f"parties.{name}.label", "a bank without labels", "give every bank its label column"
            )
        missing = {"train", "val"} - set(splits.get(name, {}))
        if missing:
            raise FedriskError(
                f"splits.{name}", f"missing {sorted(missing)}", "split every bank's applicants"
            )


def shared_preprocessor(
    banks: Mapping[str, PartyTable],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    max_categories: int = 20,
) -> FederatedPreprocessor:
    """The federated encoder from the banks' training rows, for siloed and pooled baselines.

    Same per-bank moments and row-weighted average as the statistics round (exactly equal to a plain
    run's encoder; within quantisation error of a SecAgg+ run's).
    """
    return federated_preprocessor(
        {name: bank.features.iloc[_positions(bank, splits[name]["train"])] for name, bank in banks.items()},
        max_categories,
    )


def resolve_budget(hcfg: HorizontalConfig, n_banks: int) -> PrivacyBudget:
    """Noise multiplier and ε for the run (sampling rate = banks sampled per round / banks)."""
    n_fit = sample_sizes(hcfg, n_banks)[0]
    dp = hcfg.dp
    return budget_for(
        dp.mode if dp.active else "none",
        dp.noise_multiplier,
        dp.target_epsilon,
        hcfg.rounds,
        n_fit / n_banks,
        dp.delta,
        dp.sampling,
    )


def run_horizontal(
    banks: Mapping[str, PartyTable],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    model_kind: str,
    train_cfg: TrainConfig,
    hcfg: HorizontalConfig,
    backend: str,
    workdir: Path,
    seed: int,
    *,
    hidden: Sequence[int] = (32, 16),
    dropout: float = 0.0,
    client_mods: Sequence[Mod] = (),
) -> HorizontalOutcome:
    """Federate the banks with Flower and score each bank's held-out applicants with the global model.

    Parameters
    ----------
    banks : Mapping[str, PartyTable]
        ``bank_1..bank_k`` tables (same feature columns, labels).
    splits : Mapping[str, Mapping[str, np.ndarray]]
        Bank -> ``{"train", "val", "test", ...}`` -> ids. Only train and val rows reach a ClientApp.
    model_kind, hidden, dropout
        The model family (`fedrisk.models.make_model`).
    train_cfg : TrainConfig
        ``batch_size``, ``lr``, ``weight_decay``, ``num_threads`` are used per local step; ``epochs``
        caps ``rounds * local_epochs`` and ``patience``/``min_delta`` stop the rounds early on the
        federated validation loss (`HorizontalConfig.rounds_budget`).
    hcfg : HorizontalConfig
    backend : {"inprocess", "ray"}
    workdir : Path
        Scratch directory (bank tables, the ServerApp's outputs, the message log).
    seed : int
        Model initialisation, local batch order, Flower's client sampling and DP noise.
    client_mods : Sequence of Flower mods, optional
        Extra client mods for every bank (the robustness audit's poisoning mod); see `build_client_app`.
    """
    started = time.perf_counter()
    _check_banks(banks, splits)
    hcfg.rounds_budget(train_cfg)  # bad rounds/epochs/patience fail here, before any table is written
    workdir = Path(workdir)
    party_dirs: dict[str, Path] = {}
    for name, bank in banks.items():
        train_path, val_path = bank_files(workdir / PARTIES_DIR / name)
        write_party_table(bank.take(_positions(bank, splits[name]["train"])), train_path)
        write_party_table(bank.take(_positions(bank, splits[name]["val"])), val_path)
        party_dirs[name] = train_path.parent
    max_rows = max(len(splits[name]["train"]) for name in banks)
    budget = resolve_budget(hcfg, len(banks))
    max_weight = hcfg.secagg.max_weight or (1.0 if hcfg.dp.active else float(max_rows))
    job = HorizontalJob(
        horizontal=hcfg,
        train=train_cfg,
        model_kind=model_kind,
        hidden=list(hidden),
        dropout=dropout,
        seed=seed,
        noise_multiplier=budget.noise_multiplier,
        max_weight=max_weight,
        max_rows=max_rows,
    )
    if hcfg.secagg.enabled:  # the ServerApp builds the same workflow; a bad one fails here, in one line
        secagg_workflow(job, len(banks))
    out_dir = workdir / SERVER_DIR
    run_federation(
        build_server_app(),
        build_client_app(job, client_mods),
        party_dirs,
        {"output-dir": str(out_dir), **job.to_run_config()},
        backend,  # type: ignore[arg-type]
    )
    marker = read_completion(out_dir)
    history = json.loads((out_dir / HISTORY_FILE).read_text())
    prep = FederatedPreprocessor.from_json((out_dir / PREP_FILE).read_text())
    model = make_model(model_kind, prep.n_features_out_, hidden, dropout)  # type: ignore[arg-type]
    set_weights(model, load_global_model(out_dir))

    scores: dict[str, ScoredSet] = {}
    for name, bank in banks.items():
        for split, ids in splits[name].items():
            if split == "train":  # val too: approval thresholds are chosen on it
                continue
            pos = _positions(bank, ids)
            p = predict_proba(model, prep.transform(bank.features.iloc[pos]))
            scores[ScoreKey(name, split)] = ScoredSet(np.asarray(ids), bank.label[pos], p)
    train_scores = np.concatenate(
        [
            predict_proba(model, prep.transform(bank.features.iloc[_positions(bank, splits[name]["train"])]))
            for name, bank in banks.items()
        ]
    )
    seconds = time.perf_counter() - started
    bytes_sent = int(marker.get("bytes", 0))
    return HorizontalOutcome(
        method="federated",
        scores=scores,
        history=history["rounds"],
        train_scores=train_scores,
        cost={
            "wall_seconds": seconds,
            "bytes_sent": bytes_sent,
            "epsilon": budget.epsilon,
            "delta": budget.delta,
        },
        extra={
            "kept_round": history["kept_round"],
            "rounds_run": len(history["rounds"]),
            "stopped": history["stopped"],
            "stats_bytes": history["stats_bytes"],
            "backend": backend,
        },
        epsilon=budget.epsilon,
        delta=budget.delta,
        bytes_sent=bytes_sent,
        seconds=seconds,
        privacy=budget.as_dict(),
        preprocessor=prep,
    )
