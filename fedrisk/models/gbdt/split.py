"""Split finding on one node's histogram, with xgboost's `hist` arithmetic and tie-breaking.

Written out (about 60 lines of numpy) because the federated builder must run it on histograms that come
from several holders, which no library exposes. It follows xgboost 3.2's `HistEvaluator::EnumerateSplit`:

- gain of a side = float32(G^2) / float32(H + lambda) (0 when H <= 0), summed in float32, minus the parent's
  gain, all in float32 (so ties happen where xgboost has them);
- candidates are scanned per feature forward (left = bins <= b, missing right) then, only when the node has
  missing values in that feature, backward (left = bins < b plus missing: the learned default direction);
- the best is the largest gain; ties go to the lower feature index, then to the earlier scan position;
- a child needs hessian >= min_child_weight; a split is applied when gain > 1e-6, >= gamma, and both children
  have non-zero hessian.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrisk.models.gbdt.histogram import SCALE
from fedrisk.models.gbdt.params import GBDTParams

RT_EPS = 1e-6
"""xgboost's kRtEps: the smallest loss change that counts as a split."""


@dataclass(frozen=True)
class SplitChoice:
    """The best split of a node: rows with code <= `bin` go left (missing follows `default_left`).

    Sums are fixed-point integers (see `histogram.quantize`), exact, so children's statistics are too.
    """

    gain: float
    feature: int
    bin: int
    default_left: bool
    left_sum: tuple[float, float]
    right_sum: tuple[float, float]

    def expandable(self, params: GBDTParams) -> bool:
        return (
            self.gain > RT_EPS
            and self.left_sum[1] != 0
            and self.right_sum[1] != 0
            and self.gain >= np.float32(params.gamma)
        )


def side_gain(grad_q: np.ndarray, hess_q: np.ndarray, reg_lambda: float) -> np.ndarray:
    """xgboost's CalcGainGivenWeight without constraints: float32(G^2) / float32(H + lambda), 0 if H <= 0."""
    g = np.asarray(grad_q, dtype=np.float64) / SCALE
    h = np.asarray(hess_q, dtype=np.float64) / SCALE
    num = (g * g).astype(np.float32)
    den = (h + np.float32(reg_lambda)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = num / den
    return np.where(h <= 0, np.float32(0), gain).astype(np.float32)


def leaf_value(grad_q: float, hess_q: float, params: GBDTParams) -> np.float32:
    """Leaf output: learning_rate * float32(-G / (H + lambda)), 0 below min_child_weight (xgboost CalcWeight)."""
    g, h = grad_q / SCALE, hess_q / SCALE
    if h < float(np.float32(params.min_child_weight)) or h <= 0:
        return np.float32(0.0)
    weight = np.float32(-g / (h + np.float32(params.reg_lambda)))
    return np.float32(weight * np.float32(params.learning_rate))


def find_split(
    hist: np.ndarray, total: tuple[float, float], n_bins: np.ndarray, params: GBDTParams
) -> SplitChoice | None:
    """The best split of one node from its histogram (features, max_bins + 1, 2); None if no gain > 0."""
    n_features, width, _ = hist.shape
    if n_features == 0:
        return None
    n_real = width - 1  # last slot = missing
    g_tot, h_tot = total
    bins = hist[:, :n_real, :]
    prefix = np.cumsum(bins, axis=1)  # exact integers
    nonmissing = prefix[:, -1, :]
    has_missing = (nonmissing[:, 0] != g_tot) | (nonmissing[:, 1] != h_tot)
    in_range = np.arange(n_real)[None, :] < n_bins[:, None]
    mcw = float(np.float32(params.min_child_weight)) * SCALE  # xgboost keeps its parameters in float32
    parent_gain = side_gain(g_tot, h_tot, params.reg_lambda)

    # forward: left = bins 0..b (missing right)
    gl, hl = prefix[..., 0], prefix[..., 1]
    fwd = _loss(gl, hl, g_tot - gl, h_tot - hl, parent_gain, params)
    fwd[~(in_range & (hl >= mcw) & (h_tot - hl >= mcw))] = -np.inf
    # backward: right = bins b..end (no missing), left = the rest + missing; scanned from the last bin down
    suffix = nonmissing[:, None, :] - np.concatenate(
        [np.zeros((n_features, 1, 2)), prefix[:, :-1, :]], axis=1
    )
    gs, hs = suffix[..., 0], suffix[..., 1]
    bwd = _loss(g_tot - gs, h_tot - hs, gs, hs, parent_gain, params)
    bwd[~(in_range & has_missing[:, None] & (hs >= mcw) & (h_tot - hs >= mcw))] = -np.inf

    candidates = np.concatenate([fwd, bwd[:, ::-1]], axis=1)
    best = int(np.argmax(candidates))  # first maximum: lowest feature, then scan order
    feature, position = divmod(best, 2 * n_real)
    loss = candidates[feature, position]
    if not loss > 0:
        return None
    if position < n_real:
        left = (float(gl[feature, position]), float(hl[feature, position]))
        bin_, default_left = position, False
    else:
        b = 2 * n_real - 1 - position
        right_g, right_h = float(gs[feature, b]), float(hs[feature, b])
        left = (g_tot - right_g, h_tot - right_h)
        bin_, default_left = b - 1, True
    right = (g_tot - left[0], h_tot - left[1])
    return SplitChoice(float(loss), int(feature), int(bin_), default_left, left, right)


def _loss(gl, hl, gr, hr, parent_gain, params: GBDTParams) -> np.ndarray:
    gain = side_gain(gl, hl, params.reg_lambda) + side_gain(gr, hr, params.reg_lambda)
    return (gain.astype(np.float32) - parent_gain).astype(np.float32)
