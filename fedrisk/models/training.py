"""One training routine, reused by the baselines and by every federated client.

Adam on binary cross-entropy with early stopping on a validation split held by the label holder. The
batch order comes from `epoch_batches`, so a federated run can replay exactly the batches of its
centralized twin.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fedrisk.config.model import TrainConfig
from fedrisk.core.progress import report


@dataclass
class TrainHistory:
    """Per-epoch losses and the epoch whose weights were kept."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0

    def as_rows(self) -> list[dict]:
        return [
            {"epoch": i + 1, "train_loss": tl, "val_loss": vl}
            for i, (tl, vl) in enumerate(zip(self.train_loss, self.val_loss, strict=False))
        ]


class EarlyStopping:
    """Validation-loss early stopping: the one rule every method's training uses."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.patience = cfg.patience
        self.min_delta = cfg.min_delta
        self.best_loss = float("inf")
        self.best_epoch = 0
        self.stale = 0

    def update(self, epoch: int, val_loss: float) -> tuple[bool, bool]:
        """Record one epoch; return ``(improved, stop)``."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.stale = val_loss, epoch, 0
            return True, False
        self.stale += 1
        return False, bool(self.patience and self.stale >= self.patience)


def seed_torch(seed: int) -> None:
    torch.manual_seed(seed)


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled row positions for one epoch, in batches (the last one may be smaller)."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def run_epochs(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    loss_hook: Callable[[nn.Module], torch.Tensor] | None = None,
) -> float:
    """Train in place for ``epochs`` passes; return the mean training loss of the last pass.

    ``loss_hook`` adds a term to each batch loss (FedProx's proximal term, for instance).
    """
    model.train()
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    loss_fn = nn.BCEWithLogitsLoss()
    mean_loss = float("nan")
    for _ in range(epochs):
        total, count = 0.0, 0
        for rows in epoch_batches(len(Xt), batch_size, rng):
            idx = torch.from_numpy(rows)
            optimizer.zero_grad()
            loss = loss_fn(model(Xt[idx]), yt[idx])
            if loss_hook is not None:
                loss = loss + loss_hook(model)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
            count += len(rows)
        mean_loss = total / max(count, 1)
    return mean_loss


@torch.no_grad()
def predict_logits(model: nn.Module, X: np.ndarray, batch_size: int = 65_536) -> np.ndarray:
    model.eval()
    Xt = torch.as_tensor(X, dtype=torch.float32)
    out = [model(Xt[i : i + batch_size]) for i in range(0, len(Xt), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def predict_proba(model: nn.Module, X: np.ndarray) -> np.ndarray:
    """Probability of default for each row."""
    from scipy.special import expit  # no overflow warning for very confident logits

    return expit(predict_logits(model, X).astype(np.float64))


def bce(y: np.ndarray, logits: np.ndarray) -> float:
    """Binary cross-entropy from logits (numerically stable)."""
    z = logits.astype(np.float64)
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def train(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    cfg: TrainConfig,
    seed: int = 0,
) -> TrainHistory:
    """Fit ``model`` in place; keep the weights of the best validation epoch (early stopping)."""
    import time

    torch.set_num_threads(cfg.num_threads)
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    optimizer = make_optimizer(model, cfg)
    history = TrainHistory()
    stopper, best_state = EarlyStopping(cfg), copy.deepcopy(model.state_dict())
    for epoch in range(1, cfg.epochs + 1):
        report("epoch", epoch, cfg.epochs)
        history.train_loss.append(run_epochs(model, X, y, 1, cfg.batch_size, optimizer, rng))
        history.val_loss.append(bce(y_val, predict_logits(model, X_val)))
        improved, stop = stopper.update(epoch, history.val_loss[-1])
        if improved:
            best_state, history.best_epoch = copy.deepcopy(model.state_dict()), epoch
        if stop:
            break
    model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    return history
