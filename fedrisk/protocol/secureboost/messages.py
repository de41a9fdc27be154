"""The SecureBoost messages between the label holder and a partner, one type per step.

Every payload is a numpy array (ciphertexts as fixed-width big-endian uint8 rows), so a message maps one to
one onto a Flower `ArrayRecord` and its size on the wire is `nbytes`. Read top to bottom, this file is the
whole protocol:

  rows          L -> P  the PSI roster and each applicant's place in it      P -> L  roster ids it lacks
  setup         L -> P  public key (or none) and the fixed-point layout      P -> L  bins per feature
  gradients     L -> P  once per tree: [[g * 2^w + h]] per training row (or g, h in the clear for "none")
  histograms    L -> P  per level: row -> node positions, nodes to build
                P -> L  packed, re-randomised encrypted bin sums of those nodes, every own feature
  split         L -> P  the chosen (node, own feature, bin, missing direction) of the partner's features
                P -> L  which of the node's rows go left (bits)
  decisions     L -> P  score rows: tree ids             P -> L  go-left bits of the partner's own nodes
  close         L -> P  training is over

What each side learns: the partner sees ciphertexts, row positions in the tree (which rows share a node) and
the splits chosen on its own features; the label holder sees per-bin gradient sums of the partner's features,
the partner's bin counts per feature, and left/right row sets -- never a partner's thresholds or raw values.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from fedrisk.protocol.paillier import PublicContext


class Message:
    """Base: a message's size on the wire is the sum of its arrays (plus 8 bytes per scalar field)."""

    @property
    def nbytes(self) -> int:
        total = 0
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                total += value.nbytes
            elif value is not None:
                total += 8 if not isinstance(value, PublicContext) else value.bits // 8 + value.cipher_bytes
        return total


@dataclass(frozen=True)
class Rows(Message):
    """Which firms the partner's rows are (sent once): the PSI roster and, per split, each applicant's
    position in it (-1 = a firm outside the intersection: all its values are missing for this partner)."""

    roster: np.ndarray  # the shared ids (fixed-width unicode), in the label holder's order
    positions: np.ndarray  # int32, the splits' positions concatenated
    bounds: np.ndarray  # int64 (n_splits + 1) offsets into positions
    splits: str  # comma-separated split names; the first is the training split
    max_bins: int


@dataclass(frozen=True)
class RowsReply(Message):
    absent: np.ndarray  # int32 roster entries the partner does not hold (PSI false positives)


@dataclass(frozen=True)
class Close(Message):
    """Training and scoring are over: free the partner's worker processes."""

    reason: str = "done"


@dataclass(frozen=True)
class Setup(Message):
    """Public key (None = no encryption), fixed-point bits of gradients, training rows."""

    context: PublicContext | None
    fraction_bits: int
    n_rows: int


@dataclass(frozen=True)
class SetupReply(Message):
    n_bins: np.ndarray  # bins per own feature (int32)


@dataclass(frozen=True)
class Gradients(Message):
    """One tree's gradients: encrypted packed (g, h) per row, or the fixed-point values in the clear."""

    tree: int
    ciphertexts: np.ndarray | None = None  # (rows, cipher_bytes) uint8
    grad: np.ndarray | None = None  # fixed-point integers as float64 (protection "none")
    hess: np.ndarray | None = None


@dataclass(frozen=True)
class HistogramRequest(Message):
    tree: int
    nodes: np.ndarray  # int32 node ids to build
    positions: np.ndarray  # int32 node id of every training row


@dataclass(frozen=True)
class HistogramReply(Message):
    """Encrypted: packed sums of (node, feature, bin) in that order, missing bins left out (the label holder
    gets them as node total minus the rest). Clear: the sums themselves, shape (nodes, features, bins, 2)."""

    packed: np.ndarray | None = None
    clear: np.ndarray | None = None


@dataclass(frozen=True)
class SplitRequest(Message):
    tree: int
    positions: np.ndarray  # int32, before the split
    splits: np.ndarray  # (k, 4) int32: node, own feature index, bin, default_left


@dataclass(frozen=True)
class SplitReply(Message):
    left_bits: np.ndarray  # np.packbits of go-left over each node's rows (ascending row index), concatenated


@dataclass(frozen=True)
class DecisionRequest(Message):
    rows: str  # which of the partner's registered row sets ("train", "val", "test", ...)
    trees: np.ndarray  # int32 tree ids


@dataclass(frozen=True)
class DecisionReply(Message):
    bits: np.ndarray  # packbits over rows, one block per (tree, own node) in request / ascending node order
