"""Split models for vertical federation: holders' bottom models, the label holder's top, the pooled twin.

A vertical model is cut at the embeddings: every holder (the bank too) turns its own encoded columns into
an embedding per applicant; the label holder's top model combines them into log-odds. With a linear
bottom of width 1 and a summing top this is vertical logistic regression (the FATE hetero-LR family);
with small MLPs it is a split neural network. A partner that does not know an applicant contributes a
learned per-partner vector instead (in the linear case exactly pooled LR with a missing indicator).

The holder's side of a step is `fedrisk.models.split_holder`, the schedule `fedrisk.models.split_trainer`,
coverage and the twin's encoded blocks `fedrisk.models.split_data`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from fedrisk.models.split_data import Coverage

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
