"""The two model families credit teams use: logistic regression (the scorecard family) and a small MLP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

ModelKind = Literal["logistic", "mlp"]


class LogisticRegression(nn.Module):
    """A linear score (log-odds of default) over standardised features."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class MLP(nn.Module):
    """A small feed-forward network: enough to find interactions, small enough for a credit team to run."""

    def __init__(self, n_features: int, hidden: Sequence[int] = (32, 16), dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def make_model(
    kind: ModelKind, n_features: int, hidden: Sequence[int] = (32, 16), dropout: float = 0.0
) -> nn.Module:
    """Build a model that maps ``(n, n_features)`` float32 inputs to ``(n,)`` logits."""
    if kind == "logistic":
        return LogisticRegression(n_features)
    if kind == "mlp":
        return MLP(n_features, hidden, dropout)
    raise ValueError(f"unknown model kind {kind!r}; expected 'logistic' or 'mlp'")
