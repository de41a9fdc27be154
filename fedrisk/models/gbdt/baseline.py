"""Siloed and centralized GBDT baselines with xgboost (the `xgboost-cpu` wheel: same C++ `hist` core as
`xgboost`, without the 469 MB nvidia-nccl dependency).

They take the holder's `Binner.encode` matrix (categoricals as level codes) and `GBDTParams`, so the bins,
base score and every hyper-parameter equal those of the federated trees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedrisk.models.gbdt.booster import base_margin
from fedrisk.models.gbdt.params import GBDTParams


@dataclass
class XGBoostModel:
    """A trained xgboost booster cut to its best iteration, with its per-tree validation log-loss."""

    booster: object
    n_trees: int
    valid_loss: list[float] = field(default_factory=list)

    def predict_proba(self, encoded: np.ndarray) -> np.ndarray:
        import xgboost

        return np.asarray(self.booster.predict(xgboost.DMatrix(encoded), iteration_range=(0, self.n_trees)))

    def gain_by_column(self, columns: list[str]) -> dict[str, float]:
        """Total split gain per column over the kept trees (feature importance)."""
        scores = self.booster[: self.n_trees].get_score(importance_type="total_gain")
        return {columns[int(k[1:])]: float(v) for k, v in scores.items()}


def train_xgboost(
    encoded: np.ndarray,
    y: np.ndarray,
    params: GBDTParams,
    valid: tuple[np.ndarray, np.ndarray] | None = None,
    nthread: int = 1,
) -> XGBoostModel:
    """`xgboost.train` with our parameters; early stopping on `valid` (log-loss) as in `booster.boost`."""
    import xgboost

    rate = float(1.0 / (1.0 + np.exp(-float(base_margin(y)))))
    xparams = params.xgboost_params(base_score=rate, nthread=nthread)
    train = xgboost.QuantileDMatrix(encoded, label=y, max_bin=params.max_bins, nthread=nthread)
    evals, rounds, record = [], None, {}
    if valid is not None:
        evals = [(xgboost.DMatrix(valid[0], label=valid[1], nthread=nthread), "valid")]
        rounds = params.early_stopping_rounds or None
    booster = xgboost.train(
        xparams,
        train,
        num_boost_round=params.n_trees,
        evals=evals,
        early_stopping_rounds=rounds,
        evals_result=record,
        verbose_eval=False,
    )
    n_trees = booster.best_iteration + 1 if rounds else booster.num_boosted_rounds()
    return XGBoostModel(booster, int(n_trees), [float(v) for v in record.get("valid", {}).get("logloss", [])])
