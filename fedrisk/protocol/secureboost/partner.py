"""SecureBoost, partner side: everything a feature holder without labels computes and sends.

The partner bins its own columns (`Binner`, fitted on its own training rows), receives one tree's encrypted
gradients, returns encrypted per-bin sums for the nodes asked, routes rows through splits on its own
features, and answers inference with go-left bits of its own nodes. Its thresholds never leave it: the label
holder only ever learns (feature index, bin code).
"""

from __future__ import annotations

import numpy as np

from fedrisk.core.errors import FedriskError
from fedrisk.models.gbdt.histogram import go_left, histograms, node_slots
from fedrisk.protocol import paillier
from fedrisk.protocol.secureboost.messages import (
    DecisionReply,
    DecisionRequest,
    Gradients,
    HistogramReply,
    HistogramRequest,
    Setup,
    SetupReply,
    SplitReply,
    SplitRequest,
)

PAIR_GAIN = 0.5
"""Sum two features together when their joint (bin, bin) cells are fewer than this share of the rows."""


class SecureBoostPartner:
    """A partner's state for one training run.

    Parameters
    ----------
    codes : np.ndarray
        The partner's bin codes of the aligned training rows (rows in the label holder's order).
    n_bins : np.ndarray
        Bins per own feature (`Binner.n_bins`).
    max_bins : int
        `model.max_bins`; the code `max_bins` marks a missing value.
    """

    def __init__(self, codes: np.ndarray, n_bins: np.ndarray, max_bins: int) -> None:
        self.codes = {"train": codes}
        self.n_bins = np.asarray(n_bins, dtype=np.int32)
        self.max_bins = max_bins
        self.width = max_bins + 1
        self._flat = (
            codes.astype(np.int32) + (np.arange(codes.shape[1], dtype=np.int32) * self.width)[None, :]
        )
        self.splits: dict[int, dict[int, tuple[int, int, bool]]] = {}  # tree -> node -> (feature, bin, left)
        self.context: paillier.PublicContext | None = None

    def add_rows(self, name: str, codes: np.ndarray) -> None:
        """Register rows to score later (validation, test), in the label holder's row order."""
        self.codes[name] = codes

    # ------------------------------------------------------------------ training
    def setup(self, msg: Setup) -> SetupReply:
        if msg.n_rows != self.codes["train"].shape[0]:
            raise FedriskError(
                "data.parties",
                f"label holder has {msg.n_rows} training rows, partner has {self.codes['train'].shape[0]}",
                "align both on the same firms",
            )
        self.context = None if msg.context is None else msg.context.checked()
        self._encryptor = None if self.context is None else paillier.Encryptor(self.context)
        if self.context is not None:
            self._layout = paillier.slot_layout(msg.n_rows, msg.fraction_bits, self.context)
        return SetupReply(self.n_bins.copy())

    def gradients(self, msg: Gradients) -> None:
        if self.context is None:
            self._grad, self._hess = msg.grad, msg.hess
        else:
            self._ciphers = paillier.from_bytes(msg.ciphertexts, self.context)
            if len(self._ciphers) != self.codes["train"].shape[0]:
                raise FedriskError(
                    "federation.vertical.protection", "gradient message has the wrong row count"
                )

    def histograms(self, req: HistogramRequest) -> HistogramReply:
        slot = node_slots(req.positions, req.nodes.tolist())
        if self.context is None:
            hist = histograms(self._flat, slot, len(req.nodes), self._grad, self._hess, self.width)
            return HistogramReply(clear=np.ascontiguousarray(hist))
        sums = self._encrypted_sums(slot, len(req.nodes))
        _, slot_bits, per_cipher = self._layout
        packed = paillier.pack(sums, slot_bits, per_cipher, self.context.nsquare)
        packed = self._encryptor.rerandomize(packed)
        return HistogramReply(packed=paillier.to_bytes(packed, self.context.cipher_bytes))

    def split(self, req: SplitRequest) -> SplitReply:
        blocks = []
        table = self.splits.setdefault(int(req.tree), {})
        codes = self.codes["train"]
        for node, feature, bin_, default_left in req.splits.tolist():
            rows = np.flatnonzero(req.positions == node)
            left = go_left(codes[rows, feature], bin_, bool(default_left), self.max_bins)
            blocks.append(np.packbits(left))
            table[int(node)] = (int(feature), int(bin_), bool(default_left))
        return SplitReply(np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.uint8))

    # ------------------------------------------------------------------ inference
    def decisions(self, req: DecisionRequest) -> DecisionReply:
        codes = self.codes[req.rows]
        blocks = []
        for tree in req.trees.tolist():
            for node in sorted(self.splits.get(tree, {})):
                feature, bin_, default_left = self.splits[tree][node]
                blocks.append(np.packbits(go_left(codes[:, feature], bin_, default_left, self.max_bins)))
        return DecisionReply(np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.uint8))

    def nodes_of(self, tree: int) -> list[int]:
        return sorted(self.splits.get(tree, {}))

    # ------------------------------------------------------------------ encrypted histogram
    def _encrypted_sums(self, slot: np.ndarray, n_slots: int) -> list:
        """Ciphertext sums per (slot, feature, bin) in that order, bins 0..max_bins-1 (missing left out).

        Features are taken two at a time when that is cheaper: rows are first summed into joint
        (bin, bin) cells, then each feature's bins are sums of cells (rows + 2 cells instead of 2 rows).
        """
        rows = np.flatnonzero(slot >= 0)
        terms = [self._ciphers[i] for i in rows.tolist()]
        codes = self.codes["train"][rows].astype(np.int64)
        node = slot[rows].astype(np.int64)
        n_features, b, w = codes.shape[1], self.max_bins, self.width
        n2 = self.context.nsquare
        out = [1] * (n_slots * n_features * b)

        def place(feature: int, keys: np.ndarray, products: list) -> None:
            for key, product in zip(keys.tolist(), products, strict=True):
                s, code = divmod(key, w)
                if code < b:
                    out[(s * n_features + feature) * b + code] = product

        f = 0
        while f < n_features:
            if f + 1 < n_features:
                joint = (node * w + codes[:, f]) * w + codes[:, f + 1]
                cells = np.unique(joint)
                if len(cells) < PAIR_GAIN * len(rows):
                    keys, products = paillier.group_products(terms, joint, n2)
                    for k, feat in ((0, f), (1, f + 1)):
                        marginal = keys // (w * w) * w + (keys // w % w if k == 0 else keys % w)
                        mk, mp = paillier.group_products(products, marginal, n2)
                        place(feat, mk, mp)
                    f += 2
                    continue
            keys, products = paillier.group_products(terms, node * w + codes[:, f], n2)
            place(f, keys, products)
            f += 1
        return out
