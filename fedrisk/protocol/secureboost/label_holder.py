"""SecureBoost, label holder side: gradients out, encrypted histograms in, the tree stays here.

`VerticalSession` is at once the `BoostingSession` the boosting loop drives and the `HistogramProvider` the
tree builder asks: its own features' histograms are computed in the clear, each partner's arrive encrypted
(packed Paillier) and are decrypted here, and the builder sees all features side by side -- label holder's
first, then each partner's in order -- so its splits are the pooled builder's splits on the same bins. A
partner feature's split is applied by that partner (it returns the left rows); the label holder keeps the
tree, the leaf values and the positions of its rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedrisk.core.errors import FedriskError
from fedrisk.models.gbdt.booster import base_margin, logistic_gradients, logloss
from fedrisk.models.gbdt.histogram import FIXED_POINT_BITS, LocalHistograms, Split, node_slots
from fedrisk.models.gbdt.params import GBDTParams
from fedrisk.models.gbdt.tree import Tree
from fedrisk.protocol import paillier
from fedrisk.protocol.paillier_pool import CipherWorkers
from fedrisk.protocol.secureboost.messages import (
    DecisionReply,
    DecisionRequest,
    Gradients,
    HistogramReply,
    HistogramRequest,
    Message,
    Setup,
    SetupReply,
    SplitReply,
    SplitRequest,
)

PROTECTIONS = ("none", "he")


class PartnerLink(Protocol):
    """How the label holder reaches one partner (in-process here; Flower messages in the federation layer)."""

    def setup(self, msg: Setup) -> SetupReply: ...
    def gradients(self, msg: Gradients) -> None: ...
    def histograms(self, msg: HistogramRequest) -> HistogramReply: ...
    def split(self, msg: SplitRequest) -> SplitReply: ...
    def decisions(self, msg: DecisionRequest) -> DecisionReply: ...


@dataclass
class Cost:
    """Bytes each way and seconds by step, summed over a run (what `cost` in results.json reports)."""

    bytes_to_partners: int = 0
    bytes_from_partners: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def add_time(self, step: str, seconds: float) -> None:
        self.seconds[step] = self.seconds.get(step, 0.0) + seconds


class InProcessLink:
    """A direct call to a partner object, counting the bytes of every message both ways and the partner's
    seconds per step (`partner_<step>`)."""

    def __init__(self, partner, cost: Cost) -> None:
        self.partner, self.cost = partner, cost

    def _call(self, name: str, msg: Message):
        self.cost.bytes_to_partners += msg.nbytes
        started = time.perf_counter()
        reply = getattr(self.partner, name)(msg)
        self.cost.add_time(f"partner_{name}", time.perf_counter() - started)
        if reply is not None:
            self.cost.bytes_from_partners += reply.nbytes
        return reply

    def setup(self, msg):
        return self._call("setup", msg)

    def gradients(self, msg):
        return self._call("gradients", msg)

    def histograms(self, msg):
        return self._call("histograms", msg)

    def split(self, msg):
        return self._call("split", msg)

    def decisions(self, msg):
        return self._call("decisions", msg)


class VerticalSession:
    """The label holder's training state for SecureBoost (protection "he") or its clear twin ("none").

    Parameters
    ----------
    codes, y : np.ndarray
        The label holder's own bin codes and labels of the aligned training rows.
    n_bins : np.ndarray
        Bins per own feature.
    params : GBDTParams
        Tree hyper-parameters.
    partners : sequence of PartnerLink
        One link per partner, in the feature order the model will use.
    protection : {"none", "he"}
        "he": Paillier-encrypted gradients (`key_bits`); "none": gradients in the clear (speed baseline).
    valid : tuple or None
        Own codes and labels of validation rows (partners registered the same rows as "val", the runner's name).
    workers : int, default=1
        Processes for encrypting gradients.
    """

    def __init__(
        self,
        codes: np.ndarray,
        y: np.ndarray,
        n_bins: np.ndarray,
        params: GBDTParams,
        partners: Sequence[PartnerLink],
        protection: str = "he",
        key_bits: int = 1024,
        valid: tuple[np.ndarray, np.ndarray] | None = None,
        cost: Cost | None = None,
        workers: int = 1,
    ) -> None:
        if protection not in PROTECTIONS:
            raise FedriskError(
                "federation.vertical.protection",
                f"'{protection}' is not supported by model.kind = 'gbdt'",
                f"use one of {PROTECTIONS}",
            )
        self.own = LocalHistograms(codes, params.max_bins)
        self.params, self.partners, self.valid = params, list(partners), valid
        self.y = np.asarray(y)
        self.cost = cost or Cost()
        self.base = base_margin(self.y)
        self.margin = np.full(len(self.y), self.base, dtype=np.float32)
        self.valid_margin = None if valid is None else np.full(len(valid[1]), self.base, dtype=np.float32)
        self.key = paillier.KeyPair(key_bits) if protection == "he" else None
        context = None if self.key is None else self.key.context
        if context is not None:
            self.pool = CipherWorkers(context, workers)
            self.layout = paillier.slot_layout(len(self.y), FIXED_POINT_BITS, context)
        setup = Setup(context, FIXED_POINT_BITS, len(self.y))
        partner_bins = [np.asarray(link.setup(setup).n_bins) for link in self.partners]
        self.n_bins = np.concatenate([np.asarray(n_bins, dtype=np.int32), *partner_bins]).astype(np.int32)
        sizes = [codes.shape[1]] + [len(b) for b in partner_bins]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])  # holder h owns [offsets[h], offsets[h+1])
        self.tree_id = -1
        self.provider = self

    # ------------------------------------------------------------------ BoostingSession
    def start_tree(self) -> None:
        self.tree_id += 1
        grad, hess = logistic_gradients(self.margin, self.y)
        self.own.start_tree(grad, hess)
        if self.key is None:
            msg = Gradients(self.tree_id, grad=grad, hess=hess)
        else:
            started = time.perf_counter()
            hess_bits = self.layout[0]
            plain = [
                int(g) * (1 << hess_bits) + int(h) for g, h in zip(grad.tolist(), hess.tolist(), strict=True)
            ]
            msg = Gradients(self.tree_id, ciphertexts=self.pool.encrypt(plain))
            self.cost.add_time("encrypt", time.perf_counter() - started)
        for link in self.partners:
            link.gradients(msg)

    def finish_tree(self, tree: Tree) -> float | None:
        self.margin += tree.value[self.own.positions]
        if self.valid is None:
            return None
        self.valid_margin += tree.value[self.leaves(tree, self.tree_id, self.valid[0], "val")]
        return logloss(self.valid_margin, self.valid[1])

    def close(self) -> None:
        """Stop the encryption worker processes (training is over)."""
        if self.key is not None:
            self.pool.close()

    # ------------------------------------------------------------------ HistogramProvider
    @property
    def n_features(self) -> int:
        return int(self.offsets[-1])

    def build(self, nodes: Sequence[int]) -> np.ndarray:
        own = self.own.build(nodes)
        slot = node_slots(self.own.positions, nodes)
        totals = np.stack(
            [
                np.bincount(slot[slot >= 0], weights=w[slot >= 0], minlength=len(nodes))
                for w in (self.own.grad, self.own.hess)
            ],
            axis=-1,
        )  # (nodes, 2): every row of the node, so missing bins follow by subtraction
        request = HistogramRequest(self.tree_id, np.asarray(nodes, dtype=np.int32), self.own.positions.copy())
        parts = [own]
        for h, link in enumerate(self.partners, start=1):
            reply = link.histograms(request)
            n_features = int(self.offsets[h + 1] - self.offsets[h])
            parts.append(self._partner_histogram(reply, totals, len(nodes), n_features))
        return np.concatenate(parts, axis=1)

    def apply_splits(self, splits: Sequence[Split]) -> np.ndarray:
        positions = self.own.positions
        before = positions.copy()
        counts = np.zeros((len(splits), 2), dtype=np.int64)
        owner = np.searchsorted(self.offsets, [s.feature for s in splits], side="right") - 1
        for h in range(len(self.offsets) - 1):
            mine = [k for k in range(len(splits)) if owner[k] == h]
            if not mine:
                continue
            if h == 0:
                lefts = [
                    self.own.left_mask(np.flatnonzero(before == splits[k].node), splits[k]) for k in mine
                ]
            else:
                table = np.array(
                    [
                        [
                            splits[k].node,
                            splits[k].feature - self.offsets[h],
                            splits[k].bin,
                            splits[k].default_left,
                        ]
                        for k in mine
                    ],
                    dtype=np.int32,
                )
                reply = self.partners[h - 1].split(SplitRequest(self.tree_id, before, table))
                lefts = self._unpack_lefts(
                    reply.left_bits, [int((before == splits[k].node).sum()) for k in mine]
                )
            for k, left in zip(mine, lefts, strict=True):
                rows = np.flatnonzero(before == splits[k].node)
                positions[rows] = np.where(left, splits[k].left, splits[k].right)
                counts[k] = int(left.sum()), int(len(rows) - left.sum())
        return counts

    # ------------------------------------------------------------------ inference
    def leaves(self, tree: Tree, tree_id: int, codes: np.ndarray, rows: str) -> np.ndarray:
        """Leaf of every row of `rows` in one tree (see `decisions`)."""
        return tree.leaves(self.decisions([tree_id], [tree], codes, rows)[0])

    def predict_margin(self, trees: Sequence[Tree], codes: np.ndarray, rows: str) -> np.ndarray:
        """Federated scoring of the partners' registered `rows` (own codes of the same rows given here)."""
        margin = np.full(codes.shape[0], self.base, dtype=np.float32)
        for tree, decisions in zip(trees, self.decisions(range(len(trees)), trees, codes, rows), strict=True):
            margin += tree.value[tree.leaves(decisions)]
        return margin

    def decisions(self, tree_ids, trees: Sequence[Tree], codes: np.ndarray, rows: str) -> list[np.ndarray]:
        """Go-left bits per tree: own nodes from own codes, each partner's nodes from one request to it."""
        n = codes.shape[0]
        mats = []
        for tree in trees:
            own = np.asarray([v for v in tree.internal if tree.feature[v] < self.offsets[1]], dtype=np.int64)
            mats.append(tree.decisions(codes, self.params.max_bins, own))
        for h, link in enumerate(self.partners, start=1):
            lo, hi = self.offsets[h], self.offsets[h + 1]
            owned = [[v for v in tree.internal if lo <= tree.feature[v] < hi] for tree in trees]
            if not any(owned):
                continue
            reply = link.decisions(DecisionRequest(rows, np.asarray(list(tree_ids), dtype=np.int32)))
            bits = np.unpackbits(reply.bits).reshape(sum(map(len, owned)), -1)[:, :n].astype(bool)
            k = 0
            for mat, nodes in zip(mats, owned, strict=True):
                for v in nodes:
                    mat[:, v] = bits[k]
                    k += 1
        return mats

    # ------------------------------------------------------------------ decoding
    def _partner_histogram(
        self, reply: HistogramReply, totals: np.ndarray, n_nodes: int, n_features: int
    ) -> np.ndarray:
        b = self.params.max_bins
        if self.key is None:
            hist = np.asarray(reply.clear, dtype=np.float64)
            if hist.shape != (n_nodes, n_features, b + 1, 2):
                raise FedriskError("federation.vertical", f"partner histogram of shape {hist.shape}")
            return hist
        started = time.perf_counter()
        hess_bits, slot_bits, per_cipher = self.layout
        packed = paillier.from_bytes(reply.packed, self.key.context)
        count = n_nodes * n_features * b
        if len(packed) != -(-count // per_cipher):
            raise FedriskError("federation.vertical.protection", "partner histogram has the wrong size")
        values = paillier.unpack(self.key.decrypt(packed), slot_bits, per_cipher, count)
        mask = (1 << hess_bits) - 1
        hess = [v & mask for v in values]
        grad = [(v - h) >> hess_bits for v, h in zip(values, hess, strict=True)]
        hist = np.zeros((n_nodes, n_features, b + 1, 2))
        hist[:, :, :b, 0] = np.array(grad, dtype=np.float64).reshape(n_nodes, n_features, b)
        hist[:, :, :b, 1] = np.array(hess, dtype=np.float64).reshape(n_nodes, n_features, b)
        hist[:, :, b, :] = totals[:, None, :] - hist[:, :, :b, :].sum(axis=2)
        self.cost.add_time("decrypt", time.perf_counter() - started)
        return hist

    @staticmethod
    def _unpack_lefts(bits: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
        out, start = [], 0
        for size in sizes:
            nbytes = -(-size // 8)
            out.append(np.unpackbits(bits[start : start + nbytes])[:size].astype(bool))
            start += nbytes
        return out
