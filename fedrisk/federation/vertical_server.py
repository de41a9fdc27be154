"""The label holder's ServerApp for vertical federation: labels, the top model and the training schedule.

The label holder (the bank) keeps its labels and the top model here; every holder's bottom model runs in
its own ClientApp (`fedrisk.federation.vertical_client`). Per mini-batch there is ONE round trip, to all holders in
one ``send_and_receive``: each message carries the gradient for the holder's previous embeddings and asks
for the next ones, and at an epoch boundary also for validation embeddings. Early stopping and the return
to the best weights ride on the same messages (``snapshot``/``restore`` flags), so a run costs
``batches + 3`` round trips in the worst case rather than ``3 x batches``.

Under ``federation.vertical.protection = "he"`` a step takes two round trips: the partners first get their
gradients encrypted and answer with masked encrypted aggregates, which the label holder opens; the step
message then carries the opened aggregates instead of gradients (`fedrisk.federation.vertical_protection`).

The schedule is hand-written (no Flower strategy does split learning); it mirrors `fit_twin` step for step:
same batch order (`epoch_batches` with the run seed), same initialisation, same stopping rule, so the
federated model equals its pooled twin up to float rounding.

Inputs come from the label holder's *plan* file (applicants, labels, splits, and the PSI result: the ids
shared with each partner), written by `fedrisk.federation.vertical`; outputs go to ``output-dir``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedrisk.config.model import TrainConfig
from fedrisk.config.vertical import VerticalConfig
from fedrisk.core.errors import FedriskError
from fedrisk.federation.nodes import party_nodes
from fedrisk.federation.vertical_client import app_settings
from fedrisk.federation.vertical_protection import build_protection
from fedrisk.models.split import SplitKind, SplitTop
from fedrisk.models.split_data import Coverage
from fedrisk.models.split_trainer import GradientHook, SplitTrainer
from fedrisk.protocol.vertical import SETUP, encode_setup, from_array

PLAN_KEY = "vertical-plan"
LABEL_HOLDER_KEY = "vertical-label-holder"
OUTPUT_DIR_KEY = "output-dir"
RESULT_FILE = "vertical-result.npz"
HISTORY_FILE = "vertical-history.json"

app = ServerApp()


# ---------------------------------------------------------------------------------------------------------
# The plan: what the label holder knows before training


@dataclass
class Plan:
    """The label holder's private inputs.

    Attributes
    ----------
    applicants : np.ndarray
        Its applicants' ids, split by split (``train`` first, then ``val``, then the test splits).
    labels : np.ndarray
        ``int8`` outcome per applicant.
    splits : dict[str, tuple[int, int]]
        Split name -> ``[start, stop)`` in ``applicants``.
    rosters : dict[str, np.ndarray]
        Partner -> the ids the label holder shares with it (PSI), in the order sent.
    """

    applicants: np.ndarray
    labels: np.ndarray
    splits: dict[str, tuple[int, int]]
    rosters: dict[str, np.ndarray]

    def indices(self, split: str) -> np.ndarray:
        start, stop = self.splits[split]
        return np.arange(start, stop)

    @property
    def test_splits(self) -> list[str]:
        return [s for s in self.splits if s not in ("train", "val")]

    @property
    def scored_splits(self) -> list[str]:
        """Splits scored after training: val (approval thresholds are chosen on it) and the test splits."""
        return [s for s in self.splits if s != "train"]

    def save(self, path: Path) -> Path:
        names = list(self.splits)
        bounds = np.array([self.splits[s] for s in names], dtype=np.int64)
        arrays = {f"roster.{p}": ids.astype(str) for p, ids in self.rosters.items()}
        np.savez(
            path,
            applicants=self.applicants.astype(str),
            labels=self.labels.astype(np.int8),
            split_names=np.array(names),
            split_bounds=bounds,
            **arrays,
        )
        return path

    @classmethod
    def load(cls, path: Path) -> Plan:
        with np.load(path, allow_pickle=False) as data:
            names = [str(s) for s in data["split_names"]]
            bounds = data["split_bounds"]
            rosters = {k[len("roster.") :]: data[k] for k in data.files if k.startswith("roster.")}
            return cls(
                applicants=data["applicants"],
                labels=data["labels"],
                splits={n: (int(a), int(b)) for n, (a, b) in zip(names, bounds, strict=True)},
                rosters=rosters,
            )


# ---------------------------------------------------------------------------------------------------------
# One round trip to every holder


class _Link:
    """Sends one message per holder through the (recorded) grid and returns the replies by holder.

    The split-learning steps go through `fedrisk.federation.vertical_protection.ProtectedLink`, which
    wraps this link with the run's protection and leak meter.
    """

    def __init__(self, grid: Grid, nodes: Mapping[str, int]) -> None:
        self.grid = grid
        self.nodes = dict(nodes)
        self.parties = {node: party for party, node in self.nodes.items()}
        self.round_trips = 0

    def exchange(self, message_type: str, contents: Mapping[str, RecordDict]) -> dict[str, RecordDict]:
        self.round_trips += 1
        messages = [
            Message(
                content, dst_node_id=self.nodes[h], message_type=message_type, group_id=str(self.round_trips)
            )
            for h, content in contents.items()
        ]
        out: dict[str, RecordDict] = {}
        for reply in self.grid.send_and_receive(messages):
            party = self.parties[reply.metadata.src_node_id]
            if reply.has_error():  # a RecordingGrid raises first; a bare grid does not
                raise RuntimeError(f"holder {party!r} failed on {message_type}: {reply.error.reason}")
            out[party] = reply.content
        missing = sorted(set(contents) - set(out))
        if missing:
            raise RuntimeError(f"no reply from {missing} to {message_type}")
        return out


# ---------------------------------------------------------------------------------------------------------
# The coordinator


@dataclass
class CoordinatorResult:
    """Scores (probabilities) per scored split, coverage, history and timing."""

    scores: dict[str, np.ndarray]
    covered: dict[str, np.ndarray]
    history: list[dict]
    train_seconds: float
    setup_seconds: float
    round_trips: int
    best_epoch: int
    protection: dict
    """The run's label protection, its encryption cost (``he``) and the leak measured on the partners'
    messages (``leak``): `fedrisk.federation.vertical_protection.Protection.report`."""


class VerticalCoordinator:
    """Trains the split model from the label holder's side.

    Parameters
    ----------
    grid : Grid
        Flower grid (a `RecordingGrid` when run through `fedrisk.federation.backends`).
    nodes : Mapping[str, int]
        Holder name -> node ID; must include the label holder and every partner in the plan.
    plan : Plan
        Applicants, labels, splits and PSI rosters.
    label_holder : str
        The holder whose ServerApp this is.
    kind, train_cfg, vcfg, seed
        Model family, optimiser and stopping settings, split settings, seed (shared with the clients).
    hooks : sequence of GradientHook
        Applied to each holder's gradient before it is sent (protections, audits' observers).
    """

    def __init__(
        self,
        grid: Grid,
        nodes: Mapping[str, int],
        plan: Plan,
        label_holder: str,
        kind: SplitKind,
        train_cfg: TrainConfig,
        vcfg: VerticalConfig,
        seed: int,
        hooks: Sequence[GradientHook] = (),
    ) -> None:
        holders = [label_holder, *plan.rosters]
        missing = [h for h in holders if h not in nodes]
        if missing:
            raise FedriskError(
                "parties", f"no node runs {missing} (nodes: {sorted(nodes)})", "start one node per holder"
            )
        self.link = _Link(grid, {h: nodes[h] for h in holders})
        self.grid = grid
        self.plan = plan
        self.label_holder = label_holder
        self.holders = holders
        self.cfg = train_cfg
        self.vcfg = vcfg
        self.seed = seed
        self.top = SplitTop(
            kind, holders, label_holder, seed, vcfg.embedding_dim, vcfg.top_hidden, vcfg.dropout
        )
        self.hooks = list(hooks)
        n = len(plan.applicants)
        self.coverage = {label_holder: Coverage(np.arange(n, dtype=np.int64))}
        for partner, roster in plan.rosters.items():
            self.coverage[partner] = Coverage(pd.Index(roster).get_indexer(plan.applicants).astype(np.int64))

    def _bytes(self) -> int:
        log = getattr(self.grid, "log", None)
        return int(log.bytes_sent()) if log is not None else 0

    def setup(self) -> None:
        """Send every holder its roster; drop entries a partner turns out not to hold (PSI false positives)."""
        train = self.plan.indices("train").astype(np.int32)
        contents = {self.label_holder: encode_setup(self.plan.applicants, fit_rows=train)}
        for partner, roster in self.plan.rosters.items():
            contents[partner] = encode_setup(roster, fit_rows=None)
        for h, content in self.link.exchange(SETUP, contents).items():
            absent = from_array(content.array_records["arrays"]["absent"])
            if len(absent):
                pos = self.coverage[h].pos
                pos[np.isin(pos, absent)] = -1

    def fit(self) -> CoordinatorResult:
        """Setup, train with early stopping, then score with the best weights."""
        torch.set_num_threads(self.cfg.num_threads)
        started = time.perf_counter()
        self.setup()
        train, val = self.plan.indices("train"), self.plan.indices("val")
        step_size = self.vcfg.step_size(self.cfg.batch_size, len(train))
        protection = build_protection(
            self.vcfg,
            self.link,
            self.label_holder,
            self.plan.labels,
            self.coverage,
            train,
            step_size,
            self.seed,
        )
        protection.link.setup(list(self.plan.rosters))
        setup_seconds = time.perf_counter() - started
        trainer = SplitTrainer(
            self.top, protection.link, self.coverage, self.plan.labels, self.cfg, step_size, self.seed,
            hooks=[*self.hooks, *protection.hooks], train_labels=protection.train_labels,
            bytes_sent=self._bytes,
        )  # fmt: skip
        training = trainer.train(train, val)
        scores = self._score(trainer, training.snapshot_pending)
        return CoordinatorResult(
            scores=scores,
            covered={h: self.coverage[h].pos >= 0 for h in self.plan.rosters},
            history=training.history,
            train_seconds=training.seconds,
            setup_seconds=setup_seconds,
            round_trips=self.link.round_trips,
            best_epoch=training.best_epoch,
            protection=protection.report(),
        )

    def _score(self, trainer: SplitTrainer, snapshot: bool) -> dict[str, np.ndarray]:
        """Probabilities for the training and test applicants, every holder on its best weights."""
        scored = ["train", *self.plan.scored_splits]
        rows = np.concatenate([self.plan.indices(s) for s in scored])
        p = torch.sigmoid(torch.from_numpy(trainer.score(rows, snapshot)).double()).numpy()
        scores, offset = {}, 0
        for s in scored:
            n = self.plan.splits[s][1] - self.plan.splits[s][0]
            scores[s], offset = p[offset : offset + n], offset + n
        return scores


def write_result(result: CoordinatorResult, out_dir: Path) -> None:
    """Scores and coverage as npz, history and timing as JSON, in the run's output directory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {f"scores.{s}": p for s, p in result.scores.items()}
    arrays.update({f"covered.{h}": c for h, c in result.covered.items()})
    np.savez(out_dir / RESULT_FILE, **arrays)
    info = {
        "history": result.history,
        "train_seconds": result.train_seconds,
        "setup_seconds": result.setup_seconds,
        "round_trips": result.round_trips,
        "best_epoch": result.best_epoch,
        "protection": result.protection,
    }
    (out_dir / HISTORY_FILE).write_text(json.dumps(info, indent=1))


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run vertical training from the label holder's plan; write the result to ``output-dir``."""
    kind, train_cfg, vcfg, seed = app_settings(context)
    rc = context.run_config
    plan = Plan.load(Path(str(rc[PLAN_KEY])))
    coordinator = VerticalCoordinator(
        grid, party_nodes(grid), plan, str(rc[LABEL_HOLDER_KEY]), kind, train_cfg, vcfg, seed
    )
    write_result(coordinator.fit(), Path(str(rc[OUTPUT_DIR_KEY])))
