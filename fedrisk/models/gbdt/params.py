"""Hyper-parameters of the gradient-boosted trees, shared by every method that trains them.

Siloed and centralized baselines (xgboost-cpu) and the federated protocols (our histogram core) read the same
`GBDTParams`, so an uplift compares like with like. The `[model]` section (`fedrisk.config.model`) validates
the keys; `GBDTParams.from_config` maps them one to one, and the checks here (for callers building params in
code) name the same `model.<key>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fedrisk.config.model import GBDT_KEYS, ModelConfig
from fedrisk.core.errors import FedriskError

MAX_BINS_LIMIT = 1024
"""Bins are stored as uint16 with one extra code for "missing"; 1024 is far above what credit data needs."""


@dataclass(frozen=True)
class GBDTParams:
    """Gradient-boosted trees with logistic loss, grown depth-wise on histograms (xgboost `hist` semantics).

    Parameters
    ----------
    n_trees : int, default=100
        Boosting rounds (upper bound when early stopping is on).
    max_depth : int, default=4
        Depth of every tree (root = depth 0). Encrypted vertical cost grows with it (one level = one
        encrypted histogram exchange).
    learning_rate : float, default=0.1
        Shrinkage applied to every leaf value (xgboost `eta`).
    max_bins : int, default=32
        Bins per feature (xgboost `max_bin`); also the cap on a categorical column's levels. 32 is the usual
        SecureBoost choice: encrypted histogram size is proportional to it.
    min_child_weight : float, default=1.0
        Smallest hessian sum allowed in a child.
    reg_lambda : float, default=1.0
        L2 penalty on leaf values (xgboost `lambda`).
    gamma : float, default=0.0
        Smallest loss reduction a split must bring (xgboost `min_split_loss`).
    early_stopping_rounds : int, default=10
        Stop when the validation log-loss has not improved for this many trees and keep the best prefix;
        0 = train all `n_trees`.
    """

    n_trees: int = 100
    max_depth: int = 4
    learning_rate: float = 0.1
    max_bins: int = 32
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    gamma: float = 0.0
    early_stopping_rounds: int = 10

    def __post_init__(self) -> None:
        _check_int("n_trees", self.n_trees, 1, 100_000)
        _check_int("max_depth", self.max_depth, 1, 16)
        _check_int("max_bins", self.max_bins, 2, MAX_BINS_LIMIT)
        _check_int("early_stopping_rounds", self.early_stopping_rounds, 0, 100_000)
        if not 0.0 < float(self.learning_rate) <= 1.0:
            raise FedriskError(
                "model.learning_rate", f"{self.learning_rate} is outside (0, 1]", "use e.g. 0.1"
            )
        for name in ("min_child_weight", "reg_lambda", "gamma"):
            value = float(getattr(self, name))
            if not value >= 0.0 or value == float("inf"):
                raise FedriskError(f"model.{name}", f"{value} must be a finite number >= 0")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> GBDTParams:
        """Build from `[model]`-style keys; an unknown key is refused by name instead of being ignored."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise FedriskError(
                    f"model.{key}", "is not a GBDT parameter", f"use one of: {', '.join(sorted(known))}"
                )
        return cls(**dict(values))

    @classmethod
    def from_config(cls, model: ModelConfig) -> GBDTParams:
        """The `[model]` section's tree keys (validated there) as the dataclass the tree code takes."""
        return cls(**{key: getattr(model, key) for key in GBDT_KEYS})

    def xgboost_params(self, base_score: float, nthread: int = 1) -> dict[str, Any]:
        """The same model for xgboost (`xgboost.train`): what the siloed and centralized baselines run."""
        return {
            "objective": "binary:logistic",
            "tree_method": "hist",
            "grow_policy": "depthwise",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "max_bin": self.max_bins,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "alpha": 0.0,
            "gamma": self.gamma,
            "base_score": base_score,
            "eval_metric": "logloss",
            "nthread": nthread,
        }


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FedriskError(f"model.{name}", f"{value!r} is not an integer in [{low}, {high}]")
