"""What every method hands back to the runner: scored test applicants, a training history and its cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


class ScoreKey(NamedTuple):
    """Which applicants a score set is for: a party's test split (a tuple, so a "/" in a name is harmless)."""

    party: str
    split: str


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

    ``scores`` maps a `ScoreKey` (party, test split such as ``"test"`` or ``"oot"``) to its scored applicants;
    ``cost`` holds ``wall_seconds``, ``bytes_sent`` and ``epsilon`` (None without DP).
    """

    method: str
    scores: dict[ScoreKey, ScoredSet]
    history: list[dict] = field(default_factory=list)
    cost: dict = field(default_factory=lambda: {"wall_seconds": 0.0, "bytes_sent": 0, "epsilon": None})
    train_scores: np.ndarray | None = None
    """Scores on the training applicants, for the PSI stability metric."""
    extra: dict = field(default_factory=dict)
