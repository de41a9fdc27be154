"""A bank's own trees boosted on top of the federated ones: the personalised variant of gradient boosting.

The federated booster's margin is the starting point (xgboost's ``base_margin``), so every local tree
corrects the global model where this bank's customers differ (its region, products, credit policy or
default definition). How many local trees pay is chosen as for the neural fine-tuning
(`fedrisk.models.finetune`): k-fold cross-validation over the bank's training and validation rows, where
zero trees (the federated model unchanged) competes, because a bank's validation split alone is too
small to choose on. xgboost does the boosting and the cross-validation (``xgboost.cv`` with our folds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from fedrisk.models.gbdt.params import GBDTParams


@dataclass
class LocalTrees:
    """The bank's trees on top of the federated margin (``booster`` None: the federated model is kept)."""

    booster: object | None
    n_trees: int
    cv_score_global: float
    cv_score_personal: float

    def predict_proba(self, encoded: np.ndarray, global_margin: np.ndarray) -> np.ndarray:
        """Probability of default: sigmoid(federated margin + the local trees' sum)."""
        if self.booster is None or self.n_trees == 0:
            return 1.0 / (1.0 + np.exp(-global_margin.astype(np.float64)))
        import xgboost

        data = xgboost.DMatrix(encoded, base_margin=global_margin.astype(np.float32))
        return np.asarray(self.booster.predict(data, iteration_range=(0, self.n_trees)), dtype=np.float64)


def _cv_loss(y: np.ndarray, p: np.ndarray, select: Literal["auc", "loss"]) -> float:
    """What the cross-validation minimises: 1 - AUC (ranking, what KS measures) or log-loss."""
    if select == "auc":
        return 1.0 - float(roc_auc_score(y, p))
    return float(log_loss(y, np.clip(p, 1e-12, 1 - 1e-12), labels=[0, 1]))


def boost_on_top(
    encoded: np.ndarray,
    y: np.ndarray,
    global_margin: np.ndarray,
    params: GBDTParams,
    max_trees: int,
    folds: int,
    patience: int,
    select: Literal["auc", "loss"],
    seed: int,
) -> LocalTrees:
    """Local trees on ``encoded`` (the bank's train + val rows), as many as k-fold CV supports (maybe 0).

    The trees share the federation's hyper-parameters (depth, learning rate, bins, regularisation); only
    their number is the bank's own choice.
    """
    import xgboost

    margin = global_margin.astype(np.float32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_rows = list(splitter.split(encoded, y))
    # zero local trees = the federated model: scored on the same held-out folds as every longer run
    prob = 1.0 / (1.0 + np.exp(-margin.astype(np.float64)))
    score_global = float(np.mean([_cv_loss(y[test], prob[test], select) for _, test in fold_rows]))
    xparams = params.xgboost_params(base_score=0.5, nthread=1)
    xparams.pop("base_score")  # the federated margin is the base
    xparams["eval_metric"] = "auc" if select == "auc" else "logloss"
    xparams["seed"] = seed
    data = xgboost.DMatrix(encoded, label=y, base_margin=margin)
    history = xgboost.cv(
        xparams,
        data,
        num_boost_round=max_trees,
        folds=fold_rows,
        early_stopping_rounds=patience or None,
        seed=seed,
        verbose_eval=False,
    )
    column = f"test-{xparams['eval_metric']}-mean"
    losses = (1.0 - history[column].to_numpy()) if select == "auc" else history[column].to_numpy()
    best = int(np.argmin(losses))
    score_personal = float(losses[best])
    if score_personal >= score_global:
        return LocalTrees(None, 0, score_global, score_personal)
    booster = xgboost.train(xparams, data, num_boost_round=best + 1, verbose_eval=False)
    return LocalTrees(booster, best + 1, score_global, score_personal)
