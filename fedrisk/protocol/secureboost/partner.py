"""SecureBoost, partner side: everything a feature holder without labels computes and sends.

The partner bins its own columns (`Binner`, fitted on its own training rows), receives one tree's encrypted
gradients, returns encrypted per-bin sums for the nodes asked, routes rows through splits on its own
features, and answers inference with go-left bits of its own nodes. Its thresholds never leave it: the label
holder only ever learns (feature index, bin code).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedrisk.core.errors import FedriskError
from fedrisk.models.gbdt.binning import Binner
from fedrisk.models.gbdt.histogram import go_left, histograms, node_slots
from fedrisk.protocol import paillier
from fedrisk.protocol.paillier_pool import CipherWorkers
from fedrisk.protocol.rosters import partner_rows
from fedrisk.protocol.secureboost.messages import (
    DecisionReply,
    DecisionRequest,
    Gradients,
    HistogramReply,
    HistogramRequest,
    Rows,
    RowsReply,
    Setup,
    SetupReply,
    SplitReply,
    SplitRequest,
)


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
    workers : int, default=1
        Processes for the encrypted histogram sums.
    """

    def __init__(self, codes: np.ndarray, n_bins: np.ndarray, max_bins: int, workers: int = 1) -> None:
        self.workers = workers
        self._pool: CipherWorkers | None = None
        self.codes = {"train": codes}
        self.n_bins = np.asarray(n_bins, dtype=np.int32)
        self.max_bins = max_bins
        self.width = max_bins + 1
        self._flat = (
            codes.astype(np.int32) + (np.arange(codes.shape[1], dtype=np.int32) * self.width)[None, :]
        )
        self.splits: dict[int, dict[int, tuple[int, int, bool]]] = {}  # tree -> node -> (feature, bin, left)
        self.context: paillier.PublicContext | None = None

    @classmethod
    def from_rows(
        cls, features: pd.DataFrame, own_ids: np.ndarray, msg: Rows, workers: int = 1, name: str = "partner"
    ) -> tuple[SecureBoostPartner, RowsReply]:
        """A partner from its own table and the label holder's `Rows`: bins fitted on the training
        applicants it holds, every split's applicants in the label holder's order (absent = missing)."""
        roster_rows = partner_rows(own_ids, msg.roster.astype(str))
        names = msg.splits.split(",")  # "train" first
        rows = {}
        for k, split in enumerate(names):
            positions = msg.positions[msg.bounds[k] : msg.bounds[k + 1]]
            rows[split] = np.where(positions >= 0, roster_rows[np.maximum(positions, 0)], -1)
        train = rows["train"]
        if not (train >= 0).any():
            raise FedriskError(
                f"data.parties.{name}", "holds none of the training applicants", "check its id column"
            )
        binner = Binner(msg.max_bins, name).fit(features.iloc[train[train >= 0]])
        codes = {
            split: binner.transform_encoded(binner.encode_rows(features, r)) for split, r in rows.items()
        }
        partner = cls(codes["train"], binner.n_bins, msg.max_bins, workers)
        for split in names:
            partner.add_rows(split, codes[split])
        absent = np.flatnonzero(roster_rows < 0).astype(np.int32)
        return partner, RowsReply(absent)

    def add_rows(self, name: str, codes: np.ndarray) -> None:
        """Register rows to score later (validation, test), in the label holder's row order."""
        self.codes[name] = codes

    # ------------------------------------------------------------------ training
    def setup(self, msg: Setup) -> SetupReply:
        n_rows = self.codes["train"].shape[0]
        if msg.n_rows != n_rows:
            raise FedriskError(
                "data.parties",
                f"label holder has {msg.n_rows} training rows, partner has {n_rows}",
                "align both on the same firms",
            )
        self.close()
        self.context = None if msg.context is None else msg.context.checked()
        if self.context is not None:
            self._layout = paillier.slot_layout(msg.n_rows, msg.fraction_bits, self.context)
            self._pool = CipherWorkers(self.context, self.workers)
        return SetupReply(self.n_bins.copy())

    def close(self) -> None:
        """Stop the worker processes (training is over)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def gradients(self, msg: Gradients) -> None:
        if self.context is None:
            self._grad, self._hess = msg.grad, msg.hess
            return
        wire = msg.ciphertexts
        if wire is None or wire.shape != (self.codes["train"].shape[0], self.context.cipher_bytes):
            raise FedriskError(
                "federation.vertical.protection", "gradient message does not match the key and rows"
            )
        self._wire = wire  # checked ciphertext by ciphertext when the workers read it

    def histograms(self, req: HistogramRequest) -> HistogramReply:
        slot = node_slots(req.positions, req.nodes.tolist())
        if self.context is None:
            hist = histograms(self._flat, slot, len(req.nodes), self._grad, self._hess, self.width)
            return HistogramReply(clear=np.ascontiguousarray(hist))
        rows = np.flatnonzero(slot >= 0)
        sums = self._pool.bin_sums(
            self._wire[rows], self.codes["train"][rows], slot[rows], len(req.nodes), self.max_bins
        )
        _, slot_bits, per_cipher = self._layout
        return HistogramReply(packed=self._pool.pack(sums, slot_bits, per_cipher))

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
