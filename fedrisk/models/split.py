"""Split models for vertical federation: holders' bottom models, the label holder's top, the pooled twin.

A vertical model is cut at the embeddings: every holder (the bank too) turns its own encoded columns into
an embedding per applicant; the label holder's top model combines them into log-odds. With a linear
bottom of width 1 and a summing top this is vertical logistic regression (the FATE hetero-LR family);
with small MLPs it is a split neural network. A partner that does not know an applicant contributes a
learned per-partner vector instead (in the linear case exactly pooled LR with a missing indicator).

No maintained library implements split learning's holder-side step (apply the gradient the label holder
sent for the last embeddings, then embed the next rows), so `HolderBottom` and the twin's loop are
written here, on plain torch modules and the project's Adam (`fedrisk.models.training.make_optimizer`).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import auc as area_under_curve
from sklearn.metrics import roc_curve
from torch import nn

from fedrisk.config.model import TrainConfig
from fedrisk.data.preprocessing import HolderPreprocessor
from fedrisk.data.table import PartyTable
from fedrisk.models.training import bce, make_optimizer

SplitKind = Literal["logistic", "mlp"]


# ---------------------------------------------------------------------------------------------------------
# Modules


def holder_seed(seed: int, holder: str) -> int:
    """Init seed of one holder's module: the same in the holder's ClientApp and in the pooled twin."""
    return int(np.random.SeedSequence([seed, zlib.crc32(holder.encode())]).generate_state(1)[0])


def _mlp(width_in: int, hidden: Sequence[int], width_out: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width_in, size), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        width_in = size
    layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)


def embedding_width(kind: SplitKind, embedding_dim: int) -> int:
    """Numbers per applicant a holder sends: 1 for a linear bottom (its share of the log-odds)."""
    return 1 if kind == "logistic" else embedding_dim


def make_bottom(
    kind: SplitKind,
    n_features: int,
    holder: str,
    seed: int,
    embedding_dim: int = 4,
    hidden: Sequence[int] | None = (16,),
    dropout: float | None = 0.0,
) -> nn.Module:
    """A holder's bottom model ``(n, n_features) -> (n, width)``, initialised from ``(seed, holder)``."""
    if kind not in ("logistic", "mlp"):
        raise ValueError(f"unknown model kind {kind!r}; expected 'logistic' or 'mlp'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(holder_seed(seed, holder))
        if kind == "logistic":
            return nn.Linear(n_features, 1)
        return _mlp(n_features, (16,) if hidden is None else hidden, embedding_dim, dropout or 0.0)


class SplitTop(nn.Module):
    """The label holder's top model: fills absent partners with learned vectors, then combines.

    Parameters
    ----------
    kind : {"logistic", "mlp"}
        ``logistic`` sums the holders' partial log-odds; ``mlp`` feeds the concatenated embeddings to a
        small network.
    holders : sequence of str
        Every holder in embedding order, label holder included.
    label_holder : str
        The holder that knows every applicant (no missing vector).
    seed : int
        Init seed (the top is built from ``holder_seed(seed, "__top__")``).
    embedding_dim : int
        Embedding width per holder for ``mlp``.
    hidden : sequence of int
        Hidden widths of the ``mlp`` top.
    """

    def __init__(
        self,
        kind: SplitKind,
        holders: Sequence[str],
        label_holder: str,
        seed: int,
        embedding_dim: int = 4,
        hidden: Sequence[int] = (16,),
        dropout: float | None = 0.0,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.holders = list(holders)
        self.width = embedding_width(kind, embedding_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(holder_seed(seed, "__top__"))
            self.missing = nn.ParameterDict(
                {h: nn.Parameter(torch.zeros(self.width)) for h in self.holders if h != label_holder}
            )
            self.head = (
                _mlp(self.width * len(self.holders), hidden, 1, dropout or 0.0) if kind == "mlp" else None
            )

    def forward(
        self, parts: Mapping[str, torch.Tensor], covered: Mapping[str, torch.Tensor | None], n: int
    ) -> torch.Tensor:
        """Logits ``(n,)`` from each holder's embeddings of the applicants it covers.

        ``covered[h]`` holds the batch positions of ``parts[h]``'s rows, or None when ``h`` covers all.
        """
        full = []
        for h in self.holders:
            rows = covered.get(h)
            if rows is None:
                full.append(parts[h])
            else:
                fill = self.missing[h].expand(n, self.width)
                full.append(fill.index_put((rows,), parts[h]))
        if self.head is None:
            return torch.stack([z[:, 0] for z in full]).sum(0)
        return self.head(torch.cat(full, dim=1)).squeeze(-1)


class SplitModel(nn.Module):
    """Bottoms and top in one module: the pooled twin (one process, every holder's rows)."""

    def __init__(self, bottoms: Mapping[str, nn.Module], top: SplitTop) -> None:
        super().__init__()
        self.bottoms = nn.ModuleDict(dict(bottoms))
        self.top = top

    def forward(
        self, blocks: Mapping[str, torch.Tensor], covered: Mapping[str, torch.Tensor | None], n: int
    ) -> torch.Tensor:
        parts = {h: self.bottoms[h](blocks[h]) for h in self.top.holders}
        return self.top(parts, covered, n)


def make_split_model(
    kind: SplitKind,
    n_features: Mapping[str, int],
    label_holder: str,
    seed: int,
    embedding_dim: int = 4,
    bottom_hidden: Sequence[int] | None = (16,),
    top_hidden: Sequence[int] = (16,),
    dropout: float | None = 0.0,
) -> SplitModel:
    """The split model for holders ``n_features`` (label holder first in embedding order)."""
    holders = [label_holder] + [h for h in n_features if h != label_holder]
    bottoms = {
        h: make_bottom(kind, n_features[h], h, seed, embedding_dim, bottom_hidden, dropout) for h in holders
    }
    return SplitModel(
        bottoms, SplitTop(kind, holders, label_holder, seed, embedding_dim, top_hidden, dropout)
    )


# ---------------------------------------------------------------------------------------------------------
# The holder's side of the protocol


@dataclass
class StepRequest:
    """What the label holder asks of one holder in one round trip (applied in field order).

    ``rows``/``eval_rows`` are int32 positions into the holder's roster (the id list it was sent).
    """

    snapshot: bool = False
    """Remember the current weights as the best so far (before applying ``grad``)."""
    grad: np.ndarray | None = None
    """d loss / d embedding for the rows of the previous training request."""
    restore: bool = False
    """Go back to the remembered best weights."""
    rows: np.ndarray | None = None
    """Training rows to embed (kept for the next ``grad``)."""
    eval_rows: np.ndarray | None = None
    """Rows to embed for inference only."""


@dataclass
class StepReply:
    """A holder's answer: embeddings of the training rows (graph kept) and of the inference rows."""

    embedding: np.ndarray | None = None
    eval_embedding: np.ndarray | None = None


class HolderBottom:
    """A holder's bottom model, its Adam state and the rows awaiting a gradient.

    Parameters
    ----------
    module : nn.Module
        The bottom model (`make_bottom`).
    X : np.ndarray
        The holder's encoded rows in roster order (row ``i`` = the ``i``-th id the label holder sent).
    train_cfg : TrainConfig
        Learning rate and weight decay of the holder's Adam (the same as every other method's).
    """

    def __init__(self, module: nn.Module, X: np.ndarray, train_cfg: TrainConfig) -> None:
        self.module = module
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        self.optimizer = make_optimizer(module, train_cfg)
        self.best: torch.Tensor | None = None
        self.pending_rows: np.ndarray | None = None
        self._pending: torch.Tensor | None = None

    def step(self, request: StepRequest) -> StepReply:
        """Apply one request (see `StepRequest` for the order)."""
        if request.snapshot:
            self.best = self._flat_params().clone()
        if request.grad is not None:
            self._apply(request.grad)
        if request.restore and self.best is not None:
            self._set_params(self.best)
        reply = StepReply()
        self._pending, self.pending_rows = None, None
        if request.rows is not None:
            self.module.train()
            self._pending = self.module(self._rows(request.rows))
            self.pending_rows = request.rows
            reply.embedding = self._pending.detach().numpy()
        if request.eval_rows is not None:
            self.module.eval()
            with torch.no_grad():
                reply.eval_embedding = self.module(self._rows(request.eval_rows)).numpy()
        return reply

    def _rows(self, rows: np.ndarray) -> torch.Tensor:
        return torch.index_select(self.X, 0, torch.from_numpy(rows.astype(np.int64)))

    def _apply(self, grad: np.ndarray) -> None:
        if self.pending_rows is None:
            raise RuntimeError("gradient received but no training rows are awaiting one")
        if self._pending is None:  # state restored in a fresh process: rebuild the same graph
            self._pending = self.module(self._rows(self.pending_rows))
        if grad.shape != tuple(self._pending.shape):
            raise RuntimeError(
                f"gradient of shape {grad.shape} for embeddings of shape {tuple(self._pending.shape)}"
            )
        self.optimizer.zero_grad()
        self._pending.backward(torch.from_numpy(grad))
        self.optimizer.step()
        self._pending = None
        self.pending_rows = None

    def _flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()])

    @torch.no_grad()
    def _set_params(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self.module.parameters():
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    # Flower may run a node's next message in another process (Ray actors), so the learning state must
    # round-trip through plain arrays; the encoded rows do not (the holder re-reads its own table).
    # Flat vectors keep that to a handful of arrays per message.
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Weights, Adam moments, best weights and pending rows as a few flat arrays."""
        params = list(self.module.parameters())
        out = {"weights": self._flat_params().numpy()}
        if self.best is not None:
            out["best"] = self.best.numpy()
        if all(p in self.optimizer.state for p in params):
            for name in self.optimizer.state[params[0]]:
                out[f"adam.{name}"] = torch.cat(
                    [self.optimizer.state[p][name].reshape(-1) for p in params]
                ).numpy()
        if self.pending_rows is not None:
            out["pending_rows"] = np.asarray(self.pending_rows)
        return out

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Inverse of `state_arrays` (on a freshly built `HolderBottom`)."""
        params = list(self.module.parameters())
        self._set_params(torch.from_numpy(np.array(arrays["weights"])))
        self.best = torch.from_numpy(np.array(arrays["best"])) if "best" in arrays else None
        for key, value in arrays.items():
            if not key.startswith("adam."):
                continue
            flat, name = torch.from_numpy(np.array(value)), key[len("adam.") :]
            per_param = name == "step"  # Adam's step count: one scalar per parameter
            offset = 0
            for p in params:
                size = 1 if per_param else p.numel()
                chunk = flat[offset : offset + size]
                self.optimizer.state[p][name] = chunk.reshape(()) if per_param else chunk.view_as(p).clone()
                offset += size
        rows = arrays.get("pending_rows")
        self.pending_rows = None if rows is None else np.array(rows)
        self._pending = None


# ---------------------------------------------------------------------------------------------------------
# The schedule both the twin and the federated coordinator follow


def epoch_record(
    epoch: int, train_loss: float, y_val: np.ndarray, val_logits: np.ndarray, **extra: float
) -> dict:
    """One history row: losses and the validation ranking metrics the report plots."""
    val_logits = np.asarray(val_logits, dtype=np.float64)
    auc = ks = float("nan")
    if 0 < y_val.sum() < len(y_val):  # one ROC curve for both (this runs every epoch)
        fpr, tpr, _ = roc_curve(y_val, val_logits)
        auc, ks = float(area_under_curve(fpr, tpr)), float(np.max(np.abs(tpr - fpr)))
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": bce(y_val, val_logits),
        "val_auc": auc,
        "val_ks": ks,
        **extra,
    }


@dataclass
class Coverage:
    """Which applicants a holder knows: ``pos[i]`` = row of applicant ``i`` in the holder's roster, or -1."""

    pos: np.ndarray

    def select(self, applicants: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Roster rows (int32) for ``applicants`` and their batch positions (None when all are covered)."""
        sel = self.pos[applicants]
        covered = sel >= 0
        if covered.all():
            return sel.astype(np.int32), None
        where = np.flatnonzero(covered)
        return sel[where].astype(np.int32), where


# ---------------------------------------------------------------------------------------------------------
# Encoded blocks, as the federated run and its pooled twin build them


@dataclass
class VerticalBlocks:
    """Every holder's encoded rows for a list of applicants, in roster order, and the coverage maps.

    ``blocks[h]`` holds holder ``h``'s rows for the applicants it knows, in applicant order (its roster);
    ``coverage[h].pos[i]`` is applicant ``i``'s row in ``blocks[h]`` or -1.
    """

    blocks: dict[str, np.ndarray]
    coverage: dict[str, Coverage]

    @property
    def n_features(self) -> dict[str, int]:
        return {h: b.shape[1] for h, b in self.blocks.items()}


def vertical_blocks(
    parties: Mapping[str, PartyTable],
    label_holder: str,
    applicants: np.ndarray,
    fit_applicants: np.ndarray,
    partner_preps: Mapping[str, HolderPreprocessor] | None = None,
) -> VerticalBlocks:
    """Encode every holder as the pooled twin does (and the audits that replay it).

    The label holder's preprocessing is fitted on ``fit_applicants`` (its training rows); a partner's on
    its whole table (no labels involved), unless ``partner_preps`` gives it already fitted.
    """
    blocks, coverage = {}, {}
    for name, table in parties.items():
        pos = pd.Index(table.ids).get_indexer(applicants)
        rows = pos[pos >= 0]
        if name == label_holder:
            fit_pos = pd.Index(table.ids).get_indexer(fit_applicants)
            prep = HolderPreprocessor().fit(table.features.iloc[fit_pos])
        elif partner_preps is not None and name in partner_preps:
            prep = partner_preps[name]
        else:
            prep = HolderPreprocessor().fit(table.features)
        blocks[name] = prep.transform(table.features.iloc[rows])
        roster = np.full(len(applicants), -1, dtype=np.int64)
        roster[pos >= 0] = np.arange(len(rows))
        coverage[name] = Coverage(roster)
    return VerticalBlocks(blocks, coverage)


# ---------------------------------------------------------------------------------------------------------
# The pooled twin's forward pass (its training is `fedrisk.models.split_trainer.fit_twin`)


def _gather(
    X: Mapping[str, torch.Tensor], coverage: Mapping[str, Coverage], applicants: np.ndarray
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
    blocks, covered = {}, {}
    for h, cov in coverage.items():
        rows, where = cov.select(applicants)
        blocks[h] = torch.index_select(X[h], 0, torch.from_numpy(rows.astype(np.int64)))
        covered[h] = None if where is None else torch.from_numpy(where)
    return blocks, covered


@torch.no_grad()
def predict_twin_logits(
    model: SplitModel, X: Mapping[str, torch.Tensor], coverage: Mapping[str, Coverage], applicants: np.ndarray
) -> np.ndarray:
    """Logits of the pooled model for applicant indices ``applicants``."""
    model.eval()
    blocks, covered = _gather(X, coverage, applicants)
    return model(blocks, covered, len(applicants)).numpy()
