"""What every method hands back to the runner: scored test applicants, a training history and its cost."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ScoredSet:
    """Scores of one method on one test split (the same applicants for every method)."""

    ids: np.ndarray
    y: np.ndarray
    p: np.ndarray
    segments: dict[str, np.ndarray] = field(default_factory=dict)
    """Boolean masks over the rows, e.g. ``{"covered_by_tax": ..., "uncovered_by_tax": ...}``."""


@dataclass
class MethodOutcome:
    """One method's result for one seed.

    ``scores`` maps a test-split name (``"test"``, ``"oot"``, ``"bank_3"`` …) to its scored applicants;
    ``cost`` holds ``wall_seconds``, ``bytes_sent`` and ``epsilon`` (None without DP).
    """

    method: str
    scores: dict[str, ScoredSet]
    history: list[dict] = field(default_factory=list)
    cost: dict = field(default_factory=lambda: {"wall_seconds": 0.0, "bytes_sent": 0, "epsilon": None})
    train_scores: np.ndarray | None = None
    """Scores on the training applicants, for the PSI stability metric."""
    extra: dict = field(default_factory=dict)
