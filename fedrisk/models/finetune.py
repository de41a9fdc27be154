"""Fine-tuning a shared model on one holder's own rows, with the number of epochs chosen by cross-validation.

`change_coordinates` moves a shared model into a holder's own standardisation (same predictions).

A bank's validation split is small (a few dozen defaults for a small bank), too noisy to tell a global model
from a fine-tuned one; k-fold cross-validation over the bank's training and validation rows uses every row
for validation once. Epoch 0 (the shared model unchanged) competes, so fine-tuning is kept only where it
pays on the bank's own data. Each step is the shared training routine (`run_epochs`, Adam on BCE).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from torch import nn

from fedrisk.config.model import TrainConfig
from fedrisk.models.training import bce, make_optimizer, predict_logits, run_epochs

HookFactory = Callable[[nn.Module], Callable[[nn.Module], torch.Tensor]]
"""Given the starting model, the extra loss term of every batch (e.g. Ditto's pull towards it)."""


def change_coordinates(model: nn.Module, scale: np.ndarray, offset: np.ndarray) -> nn.Module:
    """``model`` re-expressed for inputs ``x'`` with ``x = scale * x' + offset``: the same predictions.

    The first linear layer absorbs it, ``W x + b = (W * scale) x' + (W offset + b)``; used to move a
    shared model into a holder's own standardisation (a copy; ``model`` is untouched).
    """
    moved = copy.deepcopy(model)
    first = next(m for m in moved.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        first.bias += first.weight @ torch.as_tensor(offset, dtype=first.weight.dtype)
        first.weight *= torch.as_tensor(scale, dtype=first.weight.dtype)
    return moved


def recalibrate(model: nn.Module, X: np.ndarray, y: np.ndarray) -> nn.Module:
    """``model`` with Platt scaling on (X, y) folded into its last linear layer: ``sigmoid(a * logit + b)``.

    A shared model is often miscalibrated for one holder (another bad rate or default definition); a
    fine-tuning run judged on log-loss would otherwise spend its epochs on the intercept. Monotone (``a``
    is kept positive), so the ranking and KS of the model are unchanged. A copy; ``model`` is untouched.
    """
    z = predict_logits(model, X).astype(np.float64)
    if y.min() == y.max():
        return copy.deepcopy(model)
    fit = LogisticRegression(C=1e6).fit(z[:, None], y)
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if a <= 0:  # the model ranks this holder's rows backwards: only shift it to the holder's bad rate
        a, rate = 1.0, float(np.mean(y))
        b = brentq(lambda shift: float(np.mean(expit(z + shift))) - rate, -50.0, 50.0)
    moved = copy.deepcopy(model)
    last = [m for m in moved.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight *= a
        last.bias.mul_(a).add_(b)
    return moved


Criterion = Literal["auc", "loss"]
"""What cross-validation minimises: ``1 - AUC`` (ranking, what KS measures) or log-loss (ranking and calibration)."""
MIN_GAIN = {"auc": 1e-3, "loss": 1e-4}
"""Smallest cross-validated improvement over the starting model that counts as one."""


def criterion(kind: Criterion, y: np.ndarray, logits: np.ndarray) -> float:
    """Lower is better: ``1 - AUC`` or binary cross-entropy."""
    if kind == "auc":
        return 1.0 - float(roc_auc_score(y, logits)) if 0 < y.sum() < len(y) else 0.5
    return bce(y, logits)


@dataclass
class FineTuneChoice:
    """The epochs kept (0 = the starting model) and the cross-validated criterion (index = epochs)."""

    epochs: int
    curve: list[float]


def loss_curve(
    start: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    cfg: TrainConfig,
    rng: np.random.Generator,
    hook: HookFactory | None = None,
    kind: Criterion = "loss",
) -> list[float]:
    """Validation criterion of ``start`` fine-tuned for 0, 1, ..., ``cfg.epochs`` epochs (``start`` untouched).

    Stops after ``cfg.patience`` epochs without a gain (0 = never) and repeats the last value to full length.
    """
    model = copy.deepcopy(start)
    optimizer = make_optimizer(model, cfg)
    term = hook(model) if hook is not None else None
    curve = [criterion(kind, y_val, predict_logits(model, X_val))]
    best, stale = curve[0], 0
    for _ in range(cfg.epochs):
        run_epochs(model, X, y, 1, cfg.batch_size, optimizer, rng, term)
        curve.append(criterion(kind, y_val, predict_logits(model, X_val)))
        if curve[-1] < best - MIN_GAIN[kind]:
            best, stale = curve[-1], 0
        else:
            stale += 1
            if cfg.patience and stale >= cfg.patience:
                break
    return curve + [curve[-1]] * (cfg.epochs + 1 - len(curve))


def choose_epochs(
    start: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    folds: int,
    seed: int,
    hook: HookFactory | None = None,
    kind: Criterion = "auc",
) -> FineTuneChoice:
    """The fine-tuning length with the lowest k-fold validation criterion (row-weighted over folds).

    Each fold starts from ``start`` recalibrated on the fold's training rows, so epoch 0 is the shared
    model with this holder's calibration, and later epochs must improve more than calibration to win.
    """
    torch.set_num_threads(cfg.num_threads)  # tiny models: more threads only contend
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed % 2**32)
    total = np.zeros(cfg.epochs + 1)
    for k, (fit, held) in enumerate(splitter.split(X, y)):
        rng = np.random.default_rng([seed % 2**32, k])
        fold_start = recalibrate(start, X[fit], y[fit])
        total += len(held) * np.asarray(
            loss_curve(fold_start, X[fit], y[fit], X[held], y[held], cfg, rng, hook, kind)
        )
    curve = total / len(y)
    best = int(np.argmin(curve))
    if curve[best] > curve[0] - MIN_GAIN[kind]:  # no gain worth the name: keep the starting model
        best = 0
    return FineTuneChoice(best, curve.tolist())


def fine_tune(
    start: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    epochs: int,
    seed: int,
    hook: HookFactory | None = None,
) -> nn.Module:
    """``start`` recalibrated on all of ``X`` and fine-tuned for ``epochs`` epochs (a copy)."""
    model = recalibrate(start, X, y)
    if epochs > 0:
        optimizer = make_optimizer(model, cfg)
        term = hook(model) if hook is not None else None
        run_epochs(model, X, y, epochs, cfg.batch_size, optimizer, np.random.default_rng(seed % 2**32), term)
    return model
