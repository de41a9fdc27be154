"""The `[model]` and `[training]` sections of an experiment config."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Width = Annotated[int, Field(ge=1, le=4096)]
"""A hidden layer's width (torch refuses a negative one with a traceback)."""


class ModelConfig(BaseModel):
    """Which model family every method trains (siloed, federated and centralized use the same one)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["logistic", "mlp"] = Field(
        "logistic",
        description="'logistic' (scorecard family; vertical LR when split) or 'mlp' (split-NN when split).",
    )
    hidden: list[Width] = Field(
        [32, 16], description="Hidden layer widths of the MLP (ignored for logistic)."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout between MLP layers.")


class TrainConfig(BaseModel):
    """One training routine for every method, so differences between methods are the data, not the optimiser."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1, le=10_000, description="Maximum passes over the training rows.")
    batch_size: int = Field(
        1024, ge=1, description="Rows per gradient step (larger = fewer federated round trips)."
    )
    lr: float = Field(0.01, gt=0.0, le=10.0, description="Adam learning rate.")
    weight_decay: float = Field(1e-4, ge=0.0, description="L2 penalty (Adam weight decay).")
    patience: int = Field(
        5,
        ge=0,
        description="Early stopping: epochs without validation-loss improvement before stopping (0 = never).",
    )
    min_delta: float = Field(1e-4, ge=0.0, description="Smallest validation-loss improvement that counts.")
    num_threads: int = Field(
        1, ge=1, description="torch threads for training (1 is fastest for these small models)."
    )
