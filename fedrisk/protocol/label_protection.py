"""The plaintext label protections of vertical training: gradient noise and label differential privacy.

Both work on what the label holder sends or trains on; neither changes the messages' shape.

* ``noise`` (Li et al. 2022's isotropic baseline): each partner's per-row gradient gets Gaussian noise of
  per-coordinate std ``multiplier * max_j ||g_j|| / sqrt(width)`` over the batch, i.e. a noise vector about
  ``multiplier`` times the batch's largest gradient long. It hides norms and directions at a KS cost; it
  gives no formal guarantee.
* ``label_dp``: randomized response on the training labels (Warner 1965; Ghazi et al., "Deep Learning with
  Label Differential Privacy", NeurIPS 2021): each training label is flipped with probability
  ``1 / (1 + e^epsilon)`` once, before training, so everything computed from labels, the gradients partners
  receive included, is epsilon-label-DP (post-processing). Validation and test keep the true labels.
"""

from __future__ import annotations

import math

import numpy as np

from fedrisk.models.split_trainer import GradientHook


def noise_hook(label_holder: str, multiplier: float, rng: np.random.Generator) -> GradientHook:
    """A gradient hook adding the ``noise`` protection to every partner's gradient (not the label holder's)."""

    def hook(holder: str, rows: np.ndarray, grad: np.ndarray) -> np.ndarray | None:
        if holder == label_holder or len(grad) == 0:
            return None
        g = grad.astype(np.float64)
        width = int(np.prod(g.shape[1:])) or 1
        sigma = multiplier * np.linalg.norm(g.reshape(len(g), -1), axis=1).max() / math.sqrt(width)
        return (g + rng.normal(0.0, sigma, g.shape)).astype(grad.dtype)

    return hook


def flip_probability(epsilon: float) -> float:
    """Randomized response's flip probability at ``epsilon``: ``1 / (1 + e^epsilon)``."""
    return 1.0 / (1.0 + math.exp(epsilon))


def randomized_labels(
    labels: np.ndarray, train: np.ndarray, epsilon: float, rng: np.random.Generator
) -> np.ndarray:
    """``labels`` with the training rows' labels flipped with probability ``flip_probability(epsilon)``."""
    out = np.asarray(labels).copy()
    flip = rng.random(len(train)) < flip_probability(epsilon)
    out[train[flip]] = 1 - out[train[flip]]
    return out
