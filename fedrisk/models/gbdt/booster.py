"""The boosting loop (logistic loss, shrinkage, early stopping on validation) over any training session.

A `BoostingSession` is one topology's training state: who holds the labels and margins, how gradients reach
the histogram side, how validation rows are scored. `boost` runs the same loop over all of them; `fit_pooled`
is the pooled session (one party holds every column) used by tests and as the federated protocols' twin.
Nothing per tree is kept except the tree itself, so memory is flat in the number of trees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedrisk.models.gbdt.histogram import HistogramProvider, LocalHistograms, quantize
from fedrisk.models.gbdt.params import GBDTParams
from fedrisk.models.gbdt.tree import Tree, grow_tree


def base_margin(y: np.ndarray) -> np.float32:
    """Initial log-odds from the training default rate (passed to xgboost as `base_score` too)."""
    return margin_of_rate(float(np.mean(y)))


def margin_of_rate(rate: float) -> np.float32:
    """Log-odds of a default rate (what horizontal banks agree on from their label and row counts)."""
    rate = min(max(rate, 1e-6), 1 - 1e-6)
    return np.float32(np.log(rate / (1 - rate)))


def logistic_gradients(margin: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point gradient and hessian of the log-loss, computed in float32 as xgboost does."""
    m = np.minimum(-margin.astype(np.float32), np.float32(88.7))
    p = np.float32(1.0) / (np.exp(m) + np.float32(1.0) + np.float32(1e-16))
    grad = p - y.astype(np.float32)
    hess = np.maximum(p * (np.float32(1.0) - p), np.float32(1e-16))
    return quantize(grad), quantize(hess)


def logloss(margin: np.ndarray, y: np.ndarray) -> float:
    """Mean log-loss (xgboost's `logloss` metric, probabilities clipped at 1e-16)."""
    p = np.clip(1.0 / (1.0 + np.exp(-margin.astype(np.float64))), 1e-16, 1 - 1e-16)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


class BoostingSession(Protocol):
    """One topology's training state, driven tree by tree by `boost`."""

    provider: HistogramProvider
    n_bins: np.ndarray

    def start_tree(self) -> None:
        """Compute the gradients for the next tree and hand them to the histogram side."""
        ...

    def finish_tree(self, tree: Tree) -> float | None:
        """Add the tree to the training (and validation) margins; return the validation log-loss or None."""
        ...


@dataclass
class BoostResult:
    """Trees kept (best prefix under early stopping) and the per-tree validation history."""

    trees: list[Tree]
    valid_loss: list[float] = field(default_factory=list)
    best_iteration: int = -1


def boost(session: BoostingSession, params: GBDTParams) -> BoostResult:
    """Grow up to `params.n_trees` trees; with validation and early stopping, keep the best prefix."""
    trees: list[Tree] = []
    history: list[float] = []
    best, best_at = np.inf, -1
    for t in range(params.n_trees):
        session.start_tree()
        tree = grow_tree(session.provider, session.n_bins, params)
        trees.append(tree)
        loss = session.finish_tree(tree)
        if loss is None:
            continue
        history.append(loss)
        if loss < best:
            best, best_at = loss, t
        elif params.early_stopping_rounds and t - best_at >= params.early_stopping_rounds:
            break
    if history and params.early_stopping_rounds:
        trees = trees[: best_at + 1]
    return BoostResult(trees, history, best_at if history else len(trees) - 1)


class PooledSession:
    """Every column in one place: the centralized twin of the federated protocols (and unit-test oracle)."""

    def __init__(
        self,
        codes: np.ndarray,
        y: np.ndarray,
        n_bins: np.ndarray,
        params: GBDTParams,
        valid: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.provider = LocalHistograms(codes, params.max_bins)
        self.n_bins = np.asarray(n_bins)
        self.y = np.asarray(y)
        self.base = base_margin(self.y)
        self.margin = np.full(len(self.y), self.base, dtype=np.float32)
        self.valid = valid
        self.valid_margin = None if valid is None else np.full(len(valid[1]), self.base, dtype=np.float32)
        self.missing = params.max_bins

    def start_tree(self) -> None:
        self.provider.start_tree(*logistic_gradients(self.margin, self.y))

    def finish_tree(self, tree: Tree) -> float | None:
        self.margin += tree.value[self.provider.positions]
        if self.valid is None:
            return None
        self.valid_margin += tree.predict(self.valid[0], self.missing)
        return logloss(self.valid_margin, self.valid[1])


@dataclass
class GBDTModel:
    """Trees over one party's bin codes (pooled / centralized / siloed-with-our-core)."""

    trees: list[Tree]
    base: np.float32
    missing: int
    valid_loss: list[float] = field(default_factory=list)

    def predict_margin(self, codes: np.ndarray) -> np.ndarray:
        margin = np.full(codes.shape[0], self.base, dtype=np.float32)
        for tree in self.trees:
            margin += tree.predict(codes, self.missing)
        return margin

    def predict_proba(self, codes: np.ndarray) -> np.ndarray:
        """Probability of default per row."""
        return 1.0 / (1.0 + np.exp(-self.predict_margin(codes).astype(np.float64)))


def fit_pooled(
    codes: np.ndarray,
    y: np.ndarray,
    n_bins: np.ndarray,
    params: GBDTParams,
    valid: tuple[np.ndarray, np.ndarray] | None = None,
) -> GBDTModel:
    """Boosted trees on bin codes held in one place (`Binner.transform` output)."""
    session = PooledSession(codes, y, n_bins, params, valid)
    result = boost(session, params)
    return GBDTModel(result.trees, session.base, params.max_bins, result.valid_loss)
