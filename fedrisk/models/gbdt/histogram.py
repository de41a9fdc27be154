"""Gradient histograms: fixed-point gradients, per-bin sums, and the provider interface the tree builder uses.

Gradients are rounded to a fixed-point grid of 2**-FIXED_POINT_BITS before anything is summed. Every sum is
then an exact integer (held in float64, exact below 2**53), so the histogram of a node is the same number
whichever way it was computed: pooled, summed over banks, or decrypted from a partner's Paillier sums. That
is what makes federated trees *equal* to pooled ones rather than merely close. The grid (1.5e-8) is finer
than xgboost's own float32 gradients.

A `HistogramProvider` is whatever can (a) build the histograms of some nodes over its features and (b) apply
splits to the rows it routes: one holder's rows (`LocalHistograms`), several banks' rows
(`SummedHistograms`), or -- in `fedrisk.protocol.secureboost` -- a label holder consulting its partners.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

FIXED_POINT_BITS = 26
"""Fractional bits of the fixed-point gradients (a protocol constant every party uses)."""

SCALE = float(2**FIXED_POINT_BITS)
_CHUNK = 1 << 22
"""Histogram entries handled per bincount call (bounds temporary memory to ~50 MB)."""


def quantize(values: np.ndarray) -> np.ndarray:
    """Round gradients to the fixed-point grid; integers held exactly in float64."""
    return np.rint(np.asarray(values, dtype=np.float64) * SCALE)


@dataclass(frozen=True)
class Split:
    """A decision the builder asks a provider to apply: rows of `node` with code <= `bin` go to `left`.

    `feature` indexes the provider's feature axis (the builder's global order); missing codes go left when
    `default_left`. The threshold behind `bin` stays with the holder that owns the feature.
    """

    node: int
    left: int
    right: int
    feature: int
    bin: int
    default_left: bool


class HistogramProvider(Protocol):
    """What the depth-wise tree builder needs from the data side."""

    @property
    def n_features(self) -> int: ...

    def build(self, nodes: Sequence[int]) -> np.ndarray:
        """Histograms of `nodes`: shape (len(nodes), n_features, max_bins + 1, 2), [..., 0] = grad sums,
        [..., 1] = hessian sums, last bin = missing values; exact fixed-point integers."""
        ...

    def apply_splits(self, splits: Sequence[Split]) -> np.ndarray:
        """Route the rows of each split node to its children; return (len(splits), 2) left/right row counts."""
        ...


def go_left(codes: np.ndarray, bin_: int, default_left: bool, missing: int) -> np.ndarray:
    """The routing rule of every split: code <= bin goes left, the missing code follows `default_left`."""
    return np.where(codes == missing, default_left, codes <= bin_)


class LocalHistograms:
    """Histograms over rows one party holds, all its feature columns (numpy `bincount`).

    Parameters
    ----------
    codes : np.ndarray
        Bin codes (rows, features) from `Binner.transform`; `max_bins` marks missing.
    max_bins : int
        `model.max_bins`; histograms have `max_bins + 1` slots per feature.
    """

    def __init__(self, codes: np.ndarray, max_bins: int) -> None:
        self.codes = codes
        self.max_bins = max_bins
        self.width = max_bins + 1
        n, f = codes.shape
        # flat histogram slot of every (row, feature), computed once: feature offset + bin code
        self._flat = codes.astype(np.int32) + (np.arange(f, dtype=np.int32) * self.width)[None, :]
        self.positions = np.zeros(n, dtype=np.int32)
        self.grad = np.zeros(n)
        self.hess = np.zeros(n)

    @property
    def n_features(self) -> int:
        return self.codes.shape[1]

    @property
    def n_rows(self) -> int:
        return self.codes.shape[0]

    def start_tree(self, grad_q: np.ndarray, hess_q: np.ndarray) -> None:
        """New tree: fixed-point gradients of these rows, every row back at the root."""
        self.grad = np.asarray(grad_q, dtype=np.float64)
        self.hess = np.asarray(hess_q, dtype=np.float64)
        self.positions[:] = 0

    def build(self, nodes: Sequence[int]) -> np.ndarray:
        slot = node_slots(self.positions, nodes)
        return histograms(self._flat, slot, len(nodes), self.grad, self.hess, self.width)

    def apply_splits(self, splits: Sequence[Split]) -> np.ndarray:
        counts = np.zeros((len(splits), 2), dtype=np.int64)
        for k, s in enumerate(splits):
            rows = np.flatnonzero(self.positions == s.node)
            left = self.left_mask(rows, s)
            self.positions[rows] = np.where(left, s.left, s.right)
            counts[k] = int(left.sum()), int(len(rows) - left.sum())
        return counts

    def left_mask(self, rows: np.ndarray, split: Split) -> np.ndarray:
        """Which of `rows` go left under `split` (the owner's side of routing)."""
        return go_left(self.codes[rows, split.feature], split.bin, split.default_left, self.max_bins)


class SummedHistograms:
    """Horizontal federation's view: the same features at every bank, histograms added bin by bin."""

    def __init__(self, banks: Sequence[LocalHistograms]) -> None:
        self.banks = list(banks)

    @property
    def n_features(self) -> int:
        return self.banks[0].n_features

    def build(self, nodes: Sequence[int]) -> np.ndarray:
        return sum(bank.build(nodes) for bank in self.banks)

    def apply_splits(self, splits: Sequence[Split]) -> np.ndarray:
        return sum(bank.apply_splits(splits) for bank in self.banks)


def node_slots(positions: np.ndarray, nodes: Sequence[int]) -> np.ndarray:
    """Row -> index of its node in `nodes` (-1 for rows in other nodes)."""
    lookup = np.full(int(max(positions.max(initial=0), max(nodes, default=0))) + 1, -1, dtype=np.int32)
    lookup[np.asarray(nodes, dtype=np.int64)] = np.arange(len(nodes), dtype=np.int32)
    return lookup[positions]


def histograms(
    flat: np.ndarray, slot: np.ndarray, n_slots: int, grad: np.ndarray, hess: np.ndarray, width: int
) -> np.ndarray:
    """Per-(node slot, feature, bin) sums of grad and hess with `np.bincount` (rows with slot -1 skipped)."""
    n_features = flat.shape[1]
    size = n_slots * n_features * width
    out = np.zeros((2, size))
    rows = np.flatnonzero(slot >= 0)
    step = max(1, _CHUNK // max(n_features, 1))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        index = flat[chunk] + (slot[chunk].astype(np.int64) * (n_features * width))[:, None]
        index = index.ravel()
        out[0] += np.bincount(index, weights=np.repeat(grad[chunk], n_features), minlength=size)
        out[1] += np.bincount(index, weights=np.repeat(hess[chunk], n_features), minlength=size)
    return out.reshape(2, n_slots, n_features, width).transpose(1, 2, 3, 0)
