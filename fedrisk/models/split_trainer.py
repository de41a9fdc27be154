"""The split-learning schedule, written once: batches -> embeddings -> top model -> gradients back -> stopping.

The label holder runs it. What differs between its users is injected:

* the **link** that reaches the holders' bottom models — Flower messages in the federated run
  (`fedrisk.federation.vertical_server`), plain method calls on in-process `HolderBottom`s for the pooled twin
  and the audits' replays (`LocalLink`);
* **gradient hooks** that see (and may replace) each holder's gradient before it is sent — a protection
  (noise, clipping) or an observer (the label-leakage audit records exactly what a partner received);
* **training labels** (label differential privacy trains on randomised labels; validation keeps the true ones).

Every epoch's validation rides on the first message of the next epoch, and holders snapshot their weights on
the message after an improvement, so a federated run costs one round trip per batch and nothing more.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from fedrisk.config.model import TrainConfig
from fedrisk.core.metrics import ks_statistic
from fedrisk.core.progress import report
from fedrisk.models.split import SplitModel, SplitTop
from fedrisk.models.split_data import Coverage
from fedrisk.models.split_holder import HolderBottom, StepReply, StepRequest
from fedrisk.models.training import EarlyStopping, bce, epoch_batches, make_optimizer


class HolderLink(Protocol):
    """One round trip: a request to each named holder, a reply from each."""

    def step(self, requests: Mapping[str, StepRequest], kind: str) -> Mapping[str, StepReply]: ...


class LocalLink:
    """Every holder's bottom model in this process: the pooled twin, and replays of the protocol in audits."""

    def __init__(self, bottoms: Mapping[str, HolderBottom]) -> None:
        self.bottoms = dict(bottoms)
        self.round_trips = 0

    def step(self, requests: Mapping[str, StepRequest], kind: str) -> dict[str, StepReply]:
        self.round_trips += 1
        return {h: self.bottoms[h].step(r) for h, r in requests.items()}


GradientHook = Callable[[str, np.ndarray, np.ndarray], np.ndarray | None]
"""``hook(holder, applicants, grad)`` -> the gradient to send instead, or None to leave it.

``applicants`` are the applicant indices of ``grad``'s rows (only the rows the holder covers)."""


@dataclass
class SplitTraining:
    """What `SplitTrainer.train` leaves: history, stopping state and whether holders still owe a snapshot."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    snapshot_pending: bool = False
    seconds: float = 0.0


class SplitTrainer:
    """The label holder's side of split learning.

    Parameters
    ----------
    top : SplitTop
        The label holder's top model (its ``holders`` fix the embedding order).
    link : HolderLink
        How requests reach the holders' bottom models.
    coverage : Mapping[str, Coverage]
        Per holder, which applicants it knows and their rows in its roster.
    labels : np.ndarray
        Outcome of every applicant (validation and the history use these).
    cfg : TrainConfig
        Optimiser, epochs and early stopping (the same as every other method's).
    step_size : int
        Applicants per gradient step (one round trip).
    seed : int
        Batch order.
    hooks : sequence of GradientHook
        Applied in order to each holder's gradient before it is sent.
    train_labels : np.ndarray or None
        Labels the loss is computed on (e.g. randomised for label DP); None = ``labels``.
    bytes_sent : callable
        Bytes on the wire so far (for the history); 0 in process.
    on_epoch : callable or None
        Called with each epoch's history row (progress reporting).
    """

    def __init__(
        self,
        top: SplitTop,
        link: HolderLink,
        coverage: Mapping[str, Coverage],
        labels: np.ndarray,
        cfg: TrainConfig,
        step_size: int,
        seed: int,
        hooks: Sequence[GradientHook] = (),
        train_labels: np.ndarray | None = None,
        bytes_sent: Callable[[], int] = lambda: 0,
        on_epoch: Callable[[dict], None] | None = None,
    ) -> None:
        self.top = top
        self.link = link
        self.holders = list(top.holders)
        self.coverage = coverage
        self.labels = np.asarray(labels)
        self.y_train = torch.from_numpy(
            np.asarray(labels if train_labels is None else train_labels, dtype=np.float32)
        )
        self.cfg = cfg
        self.step_size = step_size
        self.seed = seed
        self.hooks = list(hooks)
        self.bytes_sent = bytes_sent
        self.on_epoch = on_epoch
        self.best_top = copy.deepcopy(top.state_dict())

    def logits(
        self, embeddings: Mapping[str, np.ndarray], covered: Mapping[str, np.ndarray | None], n: int
    ) -> torch.Tensor:
        """The top model's logits (inference mode: no dropout) from each holder's embeddings."""
        parts = {h: torch.from_numpy(embeddings[h]) for h in self.holders}
        cov = {h: None if c is None else torch.from_numpy(c) for h, c in covered.items()}
        self.top.eval()
        try:
            return self.top(parts, cov, n)
        finally:
            self.top.train()

    def _outgoing(self, parts: Mapping[str, torch.Tensor], applicants: np.ndarray, sel: Mapping) -> dict:
        """Each holder's gradient after the hooks: what the next message carries."""
        out = {}
        for h in self.holders:
            grad = parts[h].grad.numpy()
            where = sel[h][1]
            rows = applicants if where is None else applicants[where]
            for hook in self.hooks:
                changed = hook(h, rows, grad)
                grad = grad if changed is None else np.asarray(changed, dtype=np.float32)
            out[h] = grad
        return out

    def train(self, train: np.ndarray, val: np.ndarray) -> SplitTraining:
        """Epochs of one round trip per batch, early-stopped on validation loss."""
        cfg, holders = self.cfg, self.holders
        val_sel = {h: self.coverage[h].select(val) for h in holders}
        optimizer = make_optimizer(self.top, cfg)
        loss_fn = nn.BCEWithLogitsLoss()
        rng = np.random.default_rng(self.seed)
        stopper = EarlyStopping(cfg)
        result = SplitTraining()
        pending: dict[str, np.ndarray] = {}
        snapshot = False
        started = time.perf_counter()
        self.top.train()

        def end_epoch(epoch: int, train_loss: float, replies: Mapping[str, StepReply]) -> bool:
            """Validation of the weights as they stood after ``epoch``; True = stop."""
            nonlocal snapshot
            with torch.no_grad():
                emb = {h: replies[h].eval_embedding for h in holders}
                logits = self.logits(emb, {h: val_sel[h][1] for h in holders}, len(val)).numpy()
            row = epoch_record(
                epoch, train_loss, self.labels[val], logits,
                bytes_sent=self.bytes_sent(), seconds=time.perf_counter() - started,
            )  # fmt: skip
            result.history.append(row)
            if self.on_epoch is not None:
                self.on_epoch(row)
            improved, halt = stopper.update(epoch, row["val_loss"])
            if improved:  # the top now; the holders on their next message, before its gradient
                self.best_top, snapshot = copy.deepcopy(self.top.state_dict()), True
            return halt

        def finish() -> SplitTraining:
            result.best_epoch, result.snapshot_pending = stopper.best_epoch, snapshot
            result.seconds = time.perf_counter() - started
            return result

        train_loss = float("nan")
        for epoch in range(1, cfg.epochs + 1):
            report("epoch", epoch, cfg.epochs)
            total = 0.0
            for k, batch in enumerate(epoch_batches(len(train), self.step_size, rng)):
                applicants = train[batch]
                sel = {h: self.coverage[h].select(applicants) for h in holders}
                with_val = k == 0 and epoch > 1
                requests = {
                    h: StepRequest(
                        snapshot,
                        pending.get(h),
                        rows=sel[h][0],
                        eval_rows=val_sel[h][0] if with_val else None,
                    )
                    for h in holders
                }
                replies = self.link.step(requests, "step+val" if with_val else "step")
                snapshot, pending = False, {}
                if with_val and end_epoch(epoch - 1, train_loss, replies):
                    return finish()
                parts = {h: torch.from_numpy(replies[h].embedding).requires_grad_() for h in holders}
                cov = {h: None if sel[h][1] is None else torch.from_numpy(sel[h][1]) for h in holders}
                optimizer.zero_grad()
                loss = loss_fn(self.top(parts, cov, len(applicants)), self.y_train[applicants])
                loss.backward()
                optimizer.step()
                pending = self._outgoing(parts, applicants, sel)
                total += float(loss.detach()) * len(applicants)
            train_loss = total / len(train)
        requests = {
            h: StepRequest(snapshot=snapshot, grad=pending.get(h), eval_rows=val_sel[h][0]) for h in holders
        }
        snapshot = False
        end_epoch(cfg.epochs, train_loss, self.link.step(requests, "val"))
        return finish()

    def restore_best(self, snapshot_pending: bool) -> None:
        """Put the top and every holder on the best weights (in process, without scoring anything)."""
        self.top.load_state_dict(self.best_top)
        self.link.step(
            {h: StepRequest(snapshot=snapshot_pending, restore=True) for h in self.holders}, "restore"
        )

    def score(self, rows: np.ndarray, snapshot_pending: bool, kind: str = "score") -> np.ndarray:
        """Logits for applicant indices ``rows``, every holder on its best weights (the top too)."""
        self.top.load_state_dict(self.best_top)
        sel = {h: self.coverage[h].select(rows) for h in self.holders}
        requests = {
            h: StepRequest(snapshot=snapshot_pending, restore=True, eval_rows=sel[h][0]) for h in self.holders
        }
        replies = self.link.step(requests, kind)
        with torch.no_grad():
            emb = {h: replies[h].eval_embedding for h in self.holders}
            return self.logits(emb, {h: sel[h][1] for h in self.holders}, len(rows)).numpy()


def epoch_record(
    epoch: int, train_loss: float, y_val: np.ndarray, val_logits: np.ndarray, **extra: float
) -> dict:
    """One history row: losses and the validation ranking metrics the report plots."""
    val_logits = np.asarray(val_logits, dtype=np.float64)
    auc = ks = float("nan")
    if 0 < y_val.sum() < len(y_val):
        auc, ks = float(roc_auc_score(y_val, val_logits)), ks_statistic(y_val, val_logits)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": bce(y_val, val_logits),
        "val_auc": auc,
        "val_ks": ks,
        **extra,
    }


# ---------------------------------------------------------------------------------------------------------
# The pooled twin: the same schedule with every holder's bottom in this process


@dataclass
class TwinResult:
    """What `fit_twin` returns: the fitted model (best weights), per-epoch history and seconds training."""

    model: SplitModel
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    best_epoch: int = 0


def fit_twin(
    model: SplitModel,
    blocks: Mapping[str, np.ndarray],
    coverage: Mapping[str, Coverage],
    y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    cfg: TrainConfig,
    step_size: int,
    seed: int,
    hooks: Sequence[GradientHook] = (),
) -> TwinResult:
    """Train ``model`` on pooled rows with exactly the federated schedule (`SplitTrainer` over a `LocalLink`).

    ``blocks[h]`` holds holder ``h``'s encoded rows in roster order; ``coverage[h]`` maps applicants to
    them; ``train``/``val`` are applicant indices; ``y`` the labels of all applicants. The model's modules
    are trained in place and left on the best epoch's weights.
    """
    torch.set_num_threads(cfg.num_threads)
    bottoms = {h: HolderBottom(model.bottoms[h], blocks[h], cfg) for h in model.top.holders}
    trainer = SplitTrainer(model.top, LocalLink(bottoms), coverage, y, cfg, step_size, seed, hooks=hooks)
    training = trainer.train(train, val)
    trainer.restore_best(training.snapshot_pending)
    return TwinResult(model, training.history, training.seconds, training.best_epoch)
