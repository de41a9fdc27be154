"""DP-SGD (Abadi et al., CCS 2016) with Opacus, for the membership audit's "with DP" models.

Opacus does the private part -- Poisson sampling of each batch (``DPDataLoader``), per-example gradients
(its layer hooks), clipping to ``max_grad_norm``, Gaussian noise and the division by the expected batch
size (``DPOptimizer`` around fedrisk's Adam), and the RDP accountant that turns the steps taken into ε (and
solves the noise for a target ε). fedrisk adds only what its training routine does anyway: early stopping
on the label holder's validation rows (post-processing, no privacy cost) with the best weights restored.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedrisk.config.audit import DPSGDConfig
from fedrisk.config.model import TrainConfig
from fedrisk.models.training import EarlyStopping, bce, make_optimizer

ACCOUNTANT = "Opacus RDP, Poisson-subsampled Gaussian, add/remove one example"


def dp_sgd_train(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    dp: DPSGDConfig,
    seed: int,
) -> dict:
    """Train ``module`` in place with DP-SGD; same Adam, epochs and early stopping as `fedrisk.models.train`.

    ``module(*[x[rows] for x in inputs])`` must give logits ``(len(rows),)`` and be built from layers Opacus
    computes per-example gradients for (``nn.Linear`` and friends). Each step takes a Poisson sample of
    ``train_idx`` at rate ``1 / ceil(n / batch_size)``; the noise multiplier is ``dp.noise_multiplier``, or
    solved by Opacus so that all ``cfg.epochs`` spend ``dp.target_epsilon`` (early stopping only spends
    less).

    Returns
    -------
    dict
        ``epsilon`` at ``delta`` for the steps actually taken, ``delta``, ``steps``, ``sampling_rate``,
        ``noise_multiplier``, ``accountant``.
    """
    with warnings.catch_warnings():
        # Opacus's reminder that its fast RNG is not cryptographically secure (fine for an audit's
        # retraining), and torch's note that no *input* needs a gradient (the parameters do).
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        return _train(module, inputs, y, train_idx, val_idx, cfg, dp, seed)


def _train(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    dp: DPSGDConfig,
    seed: int,
) -> dict:
    torch.set_num_threads(cfg.num_threads)
    rows = torch.from_numpy(np.asarray(train_idx))
    data = TensorDataset(*(x[rows] for x in inputs), torch.from_numpy(y[train_idx].astype(np.float32)))
    loader = DataLoader(data, batch_size=cfg.batch_size, generator=torch.Generator().manual_seed(int(seed)))
    engine = PrivacyEngine(accountant="rdp")
    private = {
        "module": module,
        "optimizer": make_optimizer(module, cfg),
        "data_loader": loader,
        "max_grad_norm": dp.max_grad_norm,
        "noise_generator": torch.Generator().manual_seed(int(seed) + 1),
        "wrap_model": False,  # hooks on `module` itself: its state_dict and callers stay as they are
    }
    if dp.target_epsilon is not None:
        hooks, optimizer, batches = engine.make_private_with_epsilon(
            **private, target_epsilon=dp.target_epsilon, target_delta=dp.delta, epochs=cfg.epochs
        )
    else:
        hooks, optimizer, batches = engine.make_private(**private, noise_multiplier=dp.noise_multiplier)
    val_inputs = [x[torch.from_numpy(np.asarray(val_idx))] for x in inputs]
    stopping = EarlyStopping(cfg)
    best_state, steps = copy.deepcopy(module.state_dict()), 0
    try:
        for epoch in range(cfg.epochs):
            module.train()
            for *xs, target in batches:
                optimizer.zero_grad()
                nn.functional.binary_cross_entropy_with_logits(module(*xs), target).backward()
                optimizer.step()
                steps += 1
            module.eval()
            with torch.no_grad():
                val_loss = bce(y[val_idx], module(*val_inputs).numpy())
            improved, stop = stopping.update(epoch, val_loss)
            if improved:
                best_state = copy.deepcopy(module.state_dict())
            if stop:
                break
    finally:
        hooks.cleanup()
    module.load_state_dict(best_state)
    return {
        "epsilon": _epsilon(engine, dp.delta),
        "delta": dp.delta,
        "steps": steps,
        "sampling_rate": 1.0 / len(batches),
        "noise_multiplier": float(optimizer.noise_multiplier),
        "accountant": ACCOUNTANT,
    }


def _epsilon(engine: PrivacyEngine, delta: float) -> float:
    """ε of the steps taken (Opacus warns when the optimal RDP order is at the end of its grid)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(engine.get_epsilon(delta))
