"""Vertical federation driver: what the runner calls for the bank + tax + supply-chain experiment.

`run_vertical` plays each holder's part in order: the label holder aligns with every partner by PSI
(transcripts go into the message log as external records), writes its private plan (applicants, labels,
splits, shared ids), every holder's table goes to its own file, and Flower runs the label holder's ServerApp
(`fedrisk.federation.vertical_server`) with one ClientApp per holder (`fedrisk.federation.vertical_client`), in-process or under
Ray. Results come back only through files in the run's output directory, as under deployment.

`train_centralized_twin` trains the same split model on pooled rows in one process (same init, same batch
order, same stopping rule): the upper bound and the reference the federated run must reproduce.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedrisk.config.model import TrainConfig
from fedrisk.config.vertical import VerticalConfig
from fedrisk.core.errors import FedriskError
from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey
from fedrisk.data.table import PartyTable
from fedrisk.federation.backends import MESSAGE_LOG_FILE, OUTPUT_DIR_KEY, run_federation
from fedrisk.federation.channel import MessageLog
from fedrisk.federation.nodes import write_party_table
from fedrisk.federation.vertical_client import MODEL_KIND_KEY, SEED_KEY, TRAIN_CONFIG_KEY, VERTICAL_CONFIG_KEY
from fedrisk.federation.vertical_client import app as client_app
from fedrisk.federation.vertical_server import HISTORY_FILE, LABEL_HOLDER_KEY, PLAN_KEY, RESULT_FILE, Plan
from fedrisk.federation.vertical_server import app as server_app
from fedrisk.models.split import make_split_model, predict_twin_logits
from fedrisk.models.split_data import vertical_blocks
from fedrisk.models.split_trainer import fit_twin
from fedrisk.protocol.psi import Alignment, align_parties

__all__ = ["VerticalOutcome", "run_vertical", "train_centralized_twin"]

_KINDS = ("logistic", "mlp")


@dataclass
class VerticalOutcome:
    """One vertical training run (federated or its pooled twin), as the runner consumes it.

    Attributes
    ----------
    scores : dict[str, ScoredSet]
        Test split name (``"test"``, ``"oot"``) -> the label holder's applicants with labels and scores;
        ``segments`` holds ``covered_by_<partner>`` / ``uncovered_by_<partner>`` masks over those rows.
    coverage : dict[str, dict[str, np.ndarray]]
        Test split -> partner -> boolean mask: which applicants the partner holds (same as the segments).
    history : list[dict]
        Per epoch: ``epoch, train_loss, val_loss, val_auc, val_ks, bytes_sent`` (cumulative), ``seconds``.
    messages : dict
        Message-log summary (`MessageLog.summary`): bytes and counts in total, by kind, sender and link.
    bytes_sent : int
        Everything on the wire, PSI included (0 for the twin).
    psi_seconds, psi_bytes : float, int
        Alignment cost (0 for the twin, which joins ids directly).
    train_seconds : float
        Seconds in the training loop (first step to last validation), excluding alignment, setup, scoring.
    wall_seconds : float
        The whole call.
    train_scores : np.ndarray or None
        Scores of the training applicants (for the score-stability metric).
    best_epoch, round_trips : int
        Epoch whose weights were kept; server-to-holders round trips (0 for the twin).
    """

    scores: dict[str, ScoredSet]
    coverage: dict[str, dict[str, np.ndarray]]
    history: list[dict]
    messages: dict = field(default_factory=dict)
    bytes_sent: int = 0
    psi_seconds: float = 0.0
    psi_bytes: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0
    train_scores: np.ndarray | None = None
    best_epoch: int = 0
    round_trips: int = 0
    protection: dict = field(default_factory=dict)
    """The label protection, its encryption cost and the leak measured on the partners' own messages
    (`fedrisk.federation.vertical_protection.Protection.report`); empty for the twin."""

    def to_method_outcome(self, method: str, label_holder: str) -> MethodOutcome:
        """The runner's shape (scores keyed ``"<label_holder>/<split>"`` like the baselines)."""
        cost = {"wall_seconds": self.wall_seconds, "bytes_sent": self.bytes_sent, "epsilon": None}
        he = self.protection.get("he")
        if he:  # seconds in encryption, reported apart from the wall clock they are part of
            cost["encryption_seconds"] = he["encrypt_seconds"] + he["decrypt_seconds"] + he["partner_seconds"]
        if self.protection.get("protection") == "label_dp":
            cost["label_epsilon"] = self.protection["label_dp_epsilon"]
        extra = {}
        if self.protection:
            extra["protection"] = self.protection
            extra["label_leakage"] = {
                "defence": self.protection["protection"],
                "source": "the messages partners received in this federated run",
                "leak": self.protection["leak"],
            }
        return MethodOutcome(
            method,
            {ScoreKey(label_holder, s): scored for s, scored in self.scores.items()},
            history=self.history,
            cost=cost,
            train_scores=self.train_scores,
            extra={
                "psi_seconds": self.psi_seconds,
                "psi_bytes": self.psi_bytes,
                "train_seconds": self.train_seconds,
                "round_trips": self.round_trips,
                "best_epoch": self.best_epoch,
                "messages": self.messages,
                **extra,
            },
        )


# ---------------------------------------------------------------------------------------------------------
# Input checks (the driver's boundary: the inside trusts its data)


def _check_inputs(
    parties: Mapping[str, PartyTable],
    label_holder: str,
    splits: Mapping[str, np.ndarray],
    model_kind: str,
    kinds: tuple[str, ...] = _KINDS,
) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[int, int]]]:
    """Applicants in split order, their labels, and split bounds; FedriskError on bad input."""
    if model_kind not in kinds:
        raise FedriskError("model.kind", f"unknown model kind {model_kind!r}", f"use one of {kinds}")
    if label_holder not in parties:
        raise FedriskError(
            "label_holder",
            f"{label_holder!r} is not among the parties {sorted(parties)}",
            "name a party with labels",
        )
    bank = parties[label_holder]
    if bank.label is None:
        raise FedriskError(
            f"data.parties.{label_holder}.label",
            "the label holder has no label column",
            "give it a 0/1 label column",
        )
    if len(parties) < 2:
        raise FedriskError(
            "parties", "vertical federation needs at least one partner", "add a partner's table"
        )
    for name, table in parties.items():
        ids = pd.Index(table.ids)
        if not ids.is_unique:
            dup = ids[ids.duplicated()][:3].tolist()
            raise FedriskError(
                f"data.parties.{name}.id",
                f"{name!r} has duplicated firm ids (e.g. {dup})",
                "keep one row per firm",
            )
    for required in ("train", "val", "test"):
        if required not in splits or len(splits[required]) == 0:
            raise FedriskError("split", f"no {required!r} applicants", "give train, val and test ids")
    order = ["train", "val", *[s for s in splits if s not in ("train", "val")]]
    applicants = np.concatenate([np.asarray(splits[s]) for s in order])
    if not pd.Index(applicants).is_unique:
        raise FedriskError(
            "split", "an applicant appears in two splits (or twice in one)", "split disjointly"
        )
    pos = pd.Index(bank.ids).get_indexer(applicants)
    if (pos < 0).any():
        raise FedriskError(
            "split",
            f"{int((pos < 0).sum())} split ids are not in {label_holder!r}'s table",
            "split its own ids",
        )
    bounds, offset = {}, 0
    for s in order:
        bounds[s] = (offset, offset + len(splits[s]))
        offset += len(splits[s])
    labels = np.asarray(bank.label)[pos].astype(np.int8)
    return applicants.astype(str), labels, bounds


def _scored_sets(
    applicants: np.ndarray,
    labels: np.ndarray,
    bounds: Mapping[str, tuple[int, int]],
    scores: Mapping[str, np.ndarray],
    covered: Mapping[str, np.ndarray],
) -> tuple[dict[str, ScoredSet], dict[str, dict[str, np.ndarray]]]:
    sets, coverage = {}, {}
    for split, (a, b) in bounds.items():
        if split == "train" or split not in scores:  # val is scored too (thresholds are chosen on it)
            continue
        masks = {p: c[a:b].copy() for p, c in covered.items()}
        segments = {}
        for p, m in masks.items():
            segments[f"covered_by_{p}"] = m
            segments[f"uncovered_by_{p}"] = ~m
        sets[split] = ScoredSet(applicants[a:b], labels[a:b], scores[split], segments)
        coverage[split] = masks
    return sets, coverage


# ---------------------------------------------------------------------------------------------------------
# Federated


def run_vertical(
    parties: Mapping[str, PartyTable],
    label_holder: str,
    splits: Mapping[str, np.ndarray],
    model_kind: str,
    train_cfg: TrainConfig,
    vcfg: VerticalConfig,
    backend: str,
    workdir: Path,
    seed: int,
    alignment: Alignment | None = None,
) -> VerticalOutcome:
    """Align by PSI, then train the split model on Flower with one ClientApp per holder.

    Parameters
    ----------
    parties : Mapping[str, PartyTable]
        Every holder's table; exactly ``label_holder`` has labels.
    label_holder : str
        The holder with the labels; it runs the ServerApp (top model) and its own bottom model.
    splits : Mapping[str, np.ndarray]
        ``train``, ``val``, ``test`` (and e.g. ``oot``) -> the label holder's ids.
    model_kind : {"logistic", "mlp"}
        Vertical logistic regression or split-NN.
    train_cfg, vcfg : TrainConfig, VerticalConfig
        Optimiser/stopping and split-learning settings.
    backend : {"inprocess", "ray"}
        Engine carrying the messages.
    workdir : Path
        Holder tables, the label holder's plan and the run's outputs go here.
    seed : int
        Seeds PSI list order, initialisation and batch order.
    alignment : Alignment, optional
        A PSI result for these applicants to reuse (e.g. several trainings on one world); its transcripts
        are reported as this run's alignment cost. None runs PSI (`align_parties`).

    Returns
    -------
    VerticalOutcome

    Raises
    ------
    FedriskError
        Bad input (no label, duplicate ids, bad splits) or a partner sharing no firm with the label holder.
    """
    started = time.perf_counter()
    applicants, labels, bounds = _check_inputs(parties, label_holder, splits, model_kind)
    partners = {name: table.ids for name, table in parties.items() if name != label_holder}
    # a deployment engine that aligns on the holders' nodes: no id list comes to this process
    on_nodes = alignment is None and bool(getattr(backend, "aligns_on_nodes", False))
    if alignment is None and not on_nodes:
        alignment = align_parties(
            label_holder, applicants, partners, parallel=vcfg.psi_parallel, seed=seed, fpr=vcfg.psi_fpr
        )
    elif alignment is not None and (
        alignment.label_holder != label_holder or set(alignment.shared_ids) != set(partners)
    ):
        raise FedriskError(
            "alignment",
            f"aligns {alignment.label_holder!r} with {sorted(alignment.shared_ids)}, not {label_holder!r} with {sorted(partners)}",
            "align these parties (align_parties) or pass alignment=None",
        )
    psi_log = MessageLog()
    for t in [] if alignment is None else alignment.transcripts:
        psi_log.add_external(t.client, t.server, "psi.request", t.bytes_client_to_server)
        psi_log.add_external(t.server, t.client, "psi.response", t.bytes_server_to_client)

    workdir = Path(workdir)
    out_dir = workdir / "output"
    paths = {
        name: write_party_table(table, workdir / "parties" / f"{name}.parquet")
        for name, table in parties.items()
    }
    if on_nodes:  # partner order only; the ServerApp fills the rosters (fedrisk.federation.deploy.psi)
        rosters = {p: np.empty(0, dtype=str) for p in partners}
    else:
        rosters = {p: alignment.shared_ids[p] for p in partners}
    plan = Plan(applicants, labels, bounds, rosters)
    plan_path = plan.save(workdir / "plan.npz")
    run_config = {
        OUTPUT_DIR_KEY: str(out_dir),
        PLAN_KEY: str(plan_path),
        LABEL_HOLDER_KEY: label_holder,
        MODEL_KIND_KEY: model_kind,
        TRAIN_CONFIG_KEY: train_cfg.model_dump_json(),
        VERTICAL_CONFIG_KEY: vcfg.model_dump_json(),
        SEED_KEY: int(seed),
    }
    if on_nodes:
        from fedrisk.federation.deploy.psi import PSI_KEY, PSI_ON_NODES

        run_config[PSI_KEY] = PSI_ON_NODES
    # the label holder first: under Ray its node gets partition 0, like its place in the embedding order
    ordered = {label_holder: paths[label_holder], **{p: paths[p] for p in partners}}
    run_federation(server_app, client_app, ordered, run_config, backend)  # type: ignore[arg-type]

    with np.load(out_dir / RESULT_FILE) as data:
        scores = {k[len("scores.") :]: data[k] for k in data.files if k.startswith("scores.")}
        covered = {k[len("covered.") :]: data[k] for k in data.files if k.startswith("covered.")}
    info = json.loads((out_dir / HISTORY_FILE).read_text())
    log = MessageLog([*psi_log.records, *MessageLog.from_jsonl(out_dir / MESSAGE_LOG_FILE).records])
    sets, coverage = _scored_sets(applicants, labels, bounds, scores, covered)
    psi_bytes = psi_log.bytes_sent()
    history = [
        {**row, "bytes_sent": row["bytes_sent"] + psi_bytes} for row in info["history"]
    ]  # PSI came first
    psi_seconds = 0.0 if alignment is None else alignment.seconds
    if on_nodes:  # PSI messages are in the run's own log (and its history's byte counts) already
        from fedrisk.federation.deploy.psi import PSI_FILE

        psi_seconds = float(json.loads((out_dir / PSI_FILE).read_text())["seconds"])
        psi_bytes = sum(r.nbytes for r in log.records if r.kind.startswith("query.psi_"))
    return VerticalOutcome(
        scores=sets,
        coverage=coverage,
        history=history,
        messages=log.summary(),
        bytes_sent=log.bytes_sent(),
        psi_seconds=psi_seconds,
        psi_bytes=psi_bytes,
        train_seconds=info["train_seconds"],
        wall_seconds=time.perf_counter() - started,
        train_scores=scores.get("train"),
        best_epoch=info["best_epoch"],
        round_trips=info["round_trips"],
        protection=info.get("protection", {}),
    )


# ---------------------------------------------------------------------------------------------------------
# Pooled twin


def train_centralized_twin(
    parties: Mapping[str, PartyTable],
    label_holder: str,
    splits: Mapping[str, np.ndarray],
    model_kind: str,
    train_cfg: TrainConfig,
    vcfg: VerticalConfig,
    seed: int,
) -> VerticalOutcome:
    """The same split model on pooled rows in one process: same encoding, init, batch order and stopping.

    Ids are joined directly (the truth PSI estimates), so the twin also checks the alignment.
    """
    started = time.perf_counter()
    applicants, labels, bounds = _check_inputs(parties, label_holder, splits, model_kind)
    torch.set_num_threads(train_cfg.num_threads)
    a, b = bounds["train"]
    encoded = vertical_blocks(parties, label_holder, applicants, applicants[a:b])
    blocks, coverage, n_features = encoded.blocks, encoded.coverage, encoded.n_features
    model = make_split_model(
        model_kind,
        n_features,
        label_holder,
        seed,
        vcfg.embedding_dim,
        vcfg.bottom_hidden,
        vcfg.top_hidden,
        vcfg.dropout,
    )
    coverage = {h: coverage[h] for h in model.top.holders}
    train, val = np.arange(*bounds["train"]), np.arange(*bounds["val"])
    step = vcfg.step_size(train_cfg.batch_size, len(train))
    fit = fit_twin(model, blocks, coverage, labels, train, val, train_cfg, step, seed)

    X = {h: torch.from_numpy(b) for h, b in blocks.items()}
    scores = {}
    for split in bounds:
        logits = predict_twin_logits(model, X, coverage, np.arange(*bounds[split]))
        scores[split] = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    covered = {h: c.pos >= 0 for h, c in coverage.items() if h != label_holder}
    sets, cov = _scored_sets(applicants, labels, bounds, scores, covered)
    history = [{**row, "bytes_sent": 0} for row in fit.history]
    return VerticalOutcome(
        scores=sets,
        coverage=cov,
        history=history,
        train_seconds=fit.seconds,
        wall_seconds=time.perf_counter() - started,
        train_scores=scores["train"],
        best_epoch=fit.best_epoch,
    )
