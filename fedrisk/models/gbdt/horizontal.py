"""Horizontal boosted trees: banks with the same columns grow one model without pooling rows.

Chosen over Flower's tree bagging / cyclic XGBoost because it is lossless: with bins agreed across banks,
the server's sum of the banks' histograms *is* the pooled histogram (exact fixed-point integers), so the
trees equal pooled trees on the same bins. What a bank reveals: per-bin gradient sums of its rows (summable
under secure aggregation), its label count, and a bin summary per column for agreeing the cuts.

Agreeing the bins: each bank bins its own rows (`Binner`, xgboost's sketch) and sends, per column, its cut
points and the row count of each of its bins; the server places the global cuts at the candidate points
whose estimated global rank is closest to the equal-frequency targets (`merge_bins`). Categorical levels are
the union of the banks' levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedrisk.core.errors import FedriskError
from fedrisk.models.gbdt.binning import Binner, ColumnBins
from fedrisk.models.gbdt.booster import base_margin, logistic_gradients, logloss
from fedrisk.models.gbdt.histogram import LocalHistograms, SummedHistograms
from fedrisk.models.gbdt.params import GBDTParams
from fedrisk.models.gbdt.tree import Tree


@dataclass(frozen=True)
class BinSummary:
    """What a bank sends to agree the bins: per column, its cuts and rows per bin (missing excluded)."""

    columns: list[ColumnBins]
    counts: list[np.ndarray]


def bank_levels(features: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """A bank's categorical levels (first round of agreeing bins)."""
    return {
        c: tuple(sorted({str(v) for v in features[c].dropna()}))
        for c in features.columns
        if not pd.api.types.is_numeric_dtype(features[c])
    }


def union_levels(per_bank: Sequence[dict[str, tuple[str, ...]]]) -> dict[str, tuple[str, ...]]:
    out: dict[str, set[str]] = {}
    for levels in per_bank:
        for column, lv in levels.items():
            out.setdefault(column, set()).update(lv)
    return {c: tuple(sorted(v)) for c, v in out.items()}


def bank_summary(
    features: pd.DataFrame, max_bins: int, levels: dict[str, tuple[str, ...]], holder: str
) -> BinSummary:
    """Second round: the bank's own cuts (agreed levels pinned) and its row count per bin."""
    binner = Binner(max_bins, holder).fit(features, levels=levels)
    codes = binner.transform(features)
    counts = [
        np.bincount(codes[codes[:, j] < max_bins, j], minlength=b.n_bins) for j, b in enumerate(binner.bins_)
    ]
    return BinSummary(binner.bins_, counts)


def merge_bins(summaries: Sequence[BinSummary], max_bins: int) -> Binner:
    """Global bins from the banks' summaries (server side)."""
    first = summaries[0].columns
    merged = []
    for j, column in enumerate(first):
        if any(s.columns[j].name != column.name for s in summaries):
            raise FedriskError(
                "data.parties",
                "banks do not share the same feature columns",
                "give every bank the same columns",
            )
        if column.levels is not None:
            merged.append(column)  # levels were agreed before; thresholds are the level codes
            continue
        merged.append(ColumnBins(column.name, _merge_column(summaries, j, max_bins)))
    return Binner.from_columns(merged, max_bins, holder="banks")


def _merge_column(summaries: Sequence[BinSummary], j: int, max_bins: int) -> np.ndarray:
    candidates = np.unique(np.concatenate([s.columns[j].thresholds for s in summaries])).astype(np.float32)
    if len(candidates) <= max_bins - 1:
        return candidates
    # estimated rows below each candidate: a bank's bins below it, plus the share of the bin it falls in
    # (uniform within the bin; the open end bins are given the width of their neighbour)
    below = np.zeros(len(candidates))
    total = 0.0
    for s in summaries:
        cuts, counts = s.columns[j].thresholds.astype(np.float64), s.counts[j]
        total += counts.sum()
        if len(cuts) == 0:
            continue
        low, high = (cuts[1] - cuts[0], cuts[-1] - cuts[-2]) if len(cuts) > 1 else (1.0, 1.0)
        edges = np.concatenate([[cuts[0] - low], cuts, [cuts[-1] + high]])
        k = np.searchsorted(cuts, candidates, side="right")  # the bank's bin holding each candidate
        share = np.clip((candidates - edges[k]) / np.maximum(edges[k + 1] - edges[k], 1e-12), 0.0, 1.0)
        below += np.concatenate([[0.0], np.cumsum(counts)])[k] + share * counts[k]
    targets = total * np.arange(1, max_bins) / max_bins
    picks = np.unique(np.abs(below[None, :] - targets[:, None]).argmin(axis=1))
    return candidates[picks]


class HorizontalSession:
    """Banks boosting one model: each keeps its rows, labels and margins; histograms are summed.

    Parameters
    ----------
    banks : sequence of (codes, y)
        Each bank's training bin codes (agreed bins) and labels.
    n_bins : np.ndarray
        Bins per column of the agreed binning.
    params : GBDTParams
    valid : sequence of (codes, y) or None
        Each bank's validation rows; early stopping watches the pooled validation log-loss.
    """

    def __init__(
        self,
        banks: Sequence[tuple[np.ndarray, np.ndarray]],
        n_bins: np.ndarray,
        params: GBDTParams,
        valid: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.locals = [LocalHistograms(codes, params.max_bins) for codes, _ in banks]
        self.provider = SummedHistograms(self.locals)
        self.n_bins = np.asarray(n_bins)
        self.labels = [np.asarray(y) for _, y in banks]
        # the shared base score needs only each bank's label count and row count
        self.base = base_margin(np.concatenate(self.labels))
        self.margins = [np.full(len(y), self.base, dtype=np.float32) for y in self.labels]
        self.valid = list(valid) if valid is not None else None
        self.valid_margins = (
            None if valid is None else [np.full(len(y), self.base, np.float32) for _, y in valid]
        )
        self.missing = params.max_bins

    def start_tree(self) -> None:
        for bank, margin, y in zip(self.locals, self.margins, self.labels, strict=True):
            bank.start_tree(*logistic_gradients(margin, y))

    def finish_tree(self, tree: Tree) -> float | None:
        for bank, margin in zip(self.locals, self.margins, strict=True):
            margin += tree.value[bank.positions]
        if self.valid is None:
            return None
        for (codes, _), margin in zip(self.valid, self.valid_margins, strict=True):
            margin += tree.predict(codes, self.missing)
        # a bank reports (loss sum, rows) on its validation rows; the server divides
        losses = [logloss(m, y) * len(y) for m, (_, y) in zip(self.valid_margins, self.valid, strict=True)]
        return float(sum(losses) / sum(len(y) for _, y in self.valid))
