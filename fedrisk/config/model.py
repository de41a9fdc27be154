"""The `[model]` and `[training]` sections of an experiment config."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedrisk.core.errors import FedriskError

Width = Annotated[int, Field(ge=1, le=4096)]
"""A hidden layer's width (torch refuses a negative one with a traceback)."""


NN_KEYS = ("hidden", "dropout")
GBDT_KEYS = (
    "n_trees",
    "max_depth",
    "learning_rate",
    "max_bins",
    "min_child_weight",
    "reg_lambda",
    "gamma",
    "early_stopping_rounds",
)


class ModelConfig(BaseModel):
    """Which model family every method trains (siloed, federated and centralized use the same one)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["logistic", "mlp", "gbdt"] = Field(
        "logistic",
        description="'logistic' (scorecard family; vertical LR when split), 'mlp' (split-NN when split) or "
        "'gbdt' (gradient-boosted trees: xgboost baselines, SecureBoost vertical, histogram-summing horizontal).",
    )
    hidden: list[Width] = Field(
        [32, 16], description="Hidden layer widths of the MLP (ignored for logistic)."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout between MLP layers.")
    n_trees: int = Field(
        100, ge=1, le=100_000, description="gbdt: boosting rounds (at most, with early stopping)."
    )
    max_depth: int = Field(
        4, ge=1, le=16, description="gbdt: depth of every tree (encrypted cost grows with it)."
    )
    learning_rate: float = Field(
        0.1, gt=0.0, le=1.0, description="gbdt: shrinkage of every leaf value (eta)."
    )
    max_bins: int = Field(
        32,
        ge=2,
        le=1024,
        description="gbdt: bins per feature; also the most levels a categorical column may have.",
    )
    min_child_weight: float = Field(
        1.0, ge=0.0, le=1e6, allow_inf_nan=False, description="gbdt: least hessian in a child."
    )
    reg_lambda: float = Field(
        1.0, ge=0.0, le=1e6, allow_inf_nan=False, description="gbdt: L2 penalty on leaf values."
    )
    gamma: float = Field(
        0.0, ge=0.0, le=1e6, allow_inf_nan=False, description="gbdt: least loss reduction a split must bring."
    )
    early_stopping_rounds: int = Field(
        10,
        ge=0,
        le=100_000,
        description="gbdt: stop after this many trees without validation gain (0 = never).",
    )

    @model_validator(mode="after")
    def _keys_follow_the_kind(self) -> ModelConfig:
        """A key set for another model family is refused, not silently ignored."""
        foreign = GBDT_KEYS if self.kind != "gbdt" else NN_KEYS
        for key in foreign:
            # "set to a non-default value": results.json's resolved config re-validates with every key set
            changed = getattr(self, key) != type(self).model_fields[key].default
            if key in self.model_fields_set and changed:
                raise FedriskError(
                    f"model.{key}",
                    f"does not apply to model.kind = '{self.kind}'",
                    f"remove it (it is a {'gbdt' if key in GBDT_KEYS else 'logistic/mlp'} key)",
                )
        return self


class TrainConfig(BaseModel):
    """One training routine for every method, so differences between methods are the data, not the optimiser."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: int = Field(30, ge=1, le=10_000, description="Maximum passes over the training rows.")
    batch_size: int = Field(
        1024,
        ge=1,
        le=10_000_000,
        description="Rows per gradient step (larger = fewer federated round trips).",
    )
    lr: float = Field(0.01, gt=0.0, le=10.0, description="Adam learning rate.")
    weight_decay: float = Field(
        1e-4, ge=0.0, le=1.0, description="L2 penalty (Adam weight decay); above 1 the model learns nothing."
    )
    patience: int = Field(
        5,
        ge=0,
        le=10_000,
        description="Early stopping: epochs without validation-loss improvement before stopping (0 = never).",
    )
    min_delta: float = Field(
        1e-4, ge=0.0, le=1.0, description="Smallest validation-loss improvement that counts."
    )
    num_threads: int = Field(
        1, ge=1, le=256, description="torch threads for training (1 is fastest for these small models)."
    )
    lr_grid: list[Annotated[float, Field(gt=0.0, le=10.0)]] = Field(
        [],
        max_length=8,
        description="Tuning: learning rates tried by siloed, centralized and federated alike (each keeps the one "
        "with the lowest validation loss; the cost adds up); empty = lr only.",
    )
    weight_decay_grid: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        [],
        max_length=8,
        description="Tuning: weight decays tried with every learning rate, as lr_grid; empty = weight_decay only.",
    )

    def grid(self) -> list[tuple[float, float]]:
        """The (lr, weight_decay) candidates every method tries; one pair when nothing is tuned."""
        return [
            (lr, wd)
            for lr in self.lr_grid or [self.lr]
            for wd in self.weight_decay_grid or [self.weight_decay]
        ]
