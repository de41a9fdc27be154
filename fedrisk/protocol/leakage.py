"""How much of the label holder's labels a partner can read from what it received: Li et al.'s two attacks.

    O. Li, J. Sun, X. Yang, W. Gao, H. Zhang, J. Xie, V. Smith, C. Wang. "Label Leakage and Protection in
    Two-party Split Learning". ICLR 2022 (arXiv:2102.08504).

Both attacks score the rows of one batch from the per-row values a partner received (reported as AUC
against the true labels: 0.5 = nothing learned, 1 = labels recovered):

* ``norm``: a row's score is the L2 norm of its values;
* ``direction``: the partner knows one default in the batch and scores every other row by the cosine
  between its values and that one's.

`LeakMeter` applies them to what partners actually received in a run, batch by batch. A plaintext
gradient is read as it is; under ``protection = "he"`` a partner receives only ciphertexts, so the meter
attacks those bytes as the partner could: the payload split into one contiguous chunk per row (the layout
assigns row ``t`` its own slots, but slots are not visible in ciphertext bytes), which must score ~0.5.

No maintained library ships these attacks for a split model; they are a few lines and are written here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from fedrisk.protocol.he_wire import unpack


def _norms(g: np.ndarray) -> np.ndarray:
    return np.linalg.norm(g, axis=tuple(range(1, g.ndim)))


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC via the Mann-Whitney identity (ties count 1/2), None with one class only.

    Thousands of per-batch AUCs: scikit-learn's `roc_auc_score` spends ~1 ms per call validating its
    input, more than the training step; the rank identity gives the same number.
    """
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def norm_leak_auc(y: np.ndarray, grad: np.ndarray) -> float | None:
    """Li et al.'s norm attack on one batch: AUC of ``||g_j||`` against the labels (None: one class)."""
    return _auc(y, _norms(grad))


def direction_leak_auc(y: np.ndarray, grad: np.ndarray, rng: np.random.Generator) -> float | None:
    """Li et al.'s direction attack on one batch, the partner knowing one default (picked at random).

    Every other row is scored by the cosine of its gradient with the known default's; None when the
    batch lacks a second default or a non-default.
    """
    positives = np.flatnonzero(y == 1)
    if len(positives) < 2 or (y == 0).sum() < 1:
        return None
    ref = rng.choice(positives)
    g = grad.astype(np.float64)
    norms = np.maximum(_norms(g), 1e-30)
    cosine = g @ g[ref] / (norms * norms[ref])
    keep = np.arange(len(y)) != ref
    return _auc(y[keep], cosine[keep])


def rows_from_ciphertext(message: bytes, n_rows: int) -> np.ndarray:
    """A partner's best per-row reading of an encrypted message: its ciphertext bytes in ``n_rows`` chunks."""
    _, blobs = unpack(message)
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8).astype(np.float64)
    width = max(len(data) // max(n_rows, 1), 1)
    return np.resize(data, n_rows * width).reshape(n_rows, width)


@dataclass
class PartnerView:
    """Per-batch leak AUCs of one partner over a run."""

    norm: list[float] = field(default_factory=list)
    direction: list[float] = field(default_factory=list)
    norm_epoch: list[int] = field(default_factory=list)
    rows: int = 0

    def add(self, y: np.ndarray, values: np.ndarray, epoch: int, rng: np.random.Generator) -> None:
        self.rows += len(y)
        auc = norm_leak_auc(y, values)
        if auc is not None:
            self.norm.append(auc)
            self.norm_epoch.append(epoch)
        auc = direction_leak_auc(y, values, rng)
        if auc is not None:
            self.direction.append(auc)

    def summary(self) -> dict:
        first = [a for a, e in zip(self.norm, self.norm_epoch, strict=True) if e == 1]
        return {
            "norm_auc": _mean(self.norm),
            "direction_auc": _mean(self.direction),
            "norm_auc_first_epoch": _mean(first),
            "batches_scored": len(self.norm),
            "rows_seen": self.rows,
        }


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


class LeakMeter:
    """Scores, batch by batch, what each partner received in a run against the labels it must not learn.

    Parameters
    ----------
    labels : np.ndarray
        True outcome of every applicant (the label holder's; the meter runs on its side).
    roster_of : Mapping[str, np.ndarray]
        Per partner, ``pos`` with ``pos[i]`` = applicant ``i``'s row in the partner's roster, or -1.
    batches_per_epoch : int
        To tell the first epoch's batches apart (the first epoch leaks most).
    seed : int
        Seeds the direction attack's choice of known default.
    """

    def __init__(
        self, labels: np.ndarray, roster_of: Mapping[str, np.ndarray], batches_per_epoch: int, seed: int
    ) -> None:
        self.labels = np.asarray(labels)
        self.applicant_of = {}
        for partner, pos in roster_of.items():
            inverse = np.full(int(pos.max()) + 1 if (pos >= 0).any() else 0, -1, dtype=np.int64)
            inverse[pos[pos >= 0]] = np.flatnonzero(pos >= 0)
            self.applicant_of[partner] = inverse
        self.views = {p: PartnerView() for p in roster_of}
        self.batches_per_epoch = max(batches_per_epoch, 1)
        self._calls = dict.fromkeys(roster_of, 0)
        self._rng = np.random.default_rng([seed, 2])

    def received(self, partner: str, rows: np.ndarray, payload: np.ndarray | bytes) -> None:
        """Record one message: ``rows`` (roster rows it concerns) and what it carried about them."""
        if partner not in self.views or rows is None or len(rows) == 0:
            return
        self._calls[partner] += 1
        epoch = 1 + (self._calls[partner] - 1) // self.batches_per_epoch
        values = (
            rows_from_ciphertext(payload, len(rows)) if isinstance(payload, bytes) else np.asarray(payload)
        )
        y = self.labels[self.applicant_of[partner][np.asarray(rows, dtype=np.int64)]]
        self.views[partner].add(y, values.reshape(len(rows), -1), epoch, self._rng)

    def summary(self) -> dict[str, dict]:
        return {p: v.summary() for p, v in self.views.items()}
