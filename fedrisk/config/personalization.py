"""``federation.horizontal.personalization`` and its ``[federation.horizontal.personal]`` settings.

One global model fits no bank well when banks differ (portfolios, credit policy, default definitions);
personalised federation keeps the federation's gain for small banks and lets large banks adapt:

- ``finetune``: each bank fine-tunes the global model on its own rows for as many epochs as k-fold
  cross-validation on those rows supports (0 epochs, i.e. the global model, competes too);
- ``ditto``: the same with Ditto's pull towards the global model, ``lambda/2 ||v - w_global||^2``
  (Li et al. 2021, "Ditto: Fair and Robust Federated Learning Through Personalization");
- ``clustered``: banks whose updates from the global model point the same way federate again among
  themselves (clustered FL, Sattler et al. 2020), then each bank keeps its cluster's model if it beats
  the global one on its validation rows.

A bank with fewer than ``min_defaults`` defaults in its training and validation rows cannot fine-tune and
validate: it keeps the global model, is named in a warning, and the fallback is recorded in results.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

PERSONALIZATIONS = ("none", "finetune", "ditto", "clustered")
"""Values of ``federation.horizontal.personalization``."""

Personalization = Literal["none", "finetune", "ditto", "clustered"]


class PersonalConfig(BaseModel):
    """How each bank adapts the global model (``[federation.horizontal.personal]``).

    Parameters
    ----------
    epochs : int, default=30
        Most local epochs of fine-tuning (finetune, ditto); the number kept (0 = the global model) is the
        one with the lowest k-fold cross-validated loss on the bank's training and validation rows.
    folds : int, default=5
        Folds of that cross-validation (a bank's validation split alone is too small to choose on).
    patience : int, default=3
        Each fold stops after this many epochs without a validation gain (0 = never stop early).
    select : {"auc", "loss"}, default="auc"
        What that cross-validation minimises: ``1 - AUC`` (ranking, what KS measures; the kept model is
        recalibrated to the bank's bad rate either way) or log-loss (ranking and calibration together).
    lr : float or None, default=None
        Fine-tuning learning rate; empty = ``training.lr``.
    ditto_lambda : float, default=0.1
        Ditto's weight of the pull towards the global model (0 = plain fine-tuning).
    clusters : int or "auto", default="auto"
        Number of bank clusters; ``auto`` picks 1 to ``max_clusters`` by the silhouette of the banks'
        update directions (one cluster when no split separates them clearly).
    max_clusters : int, default=3
        Most clusters ``auto`` considers.
    cluster_rounds : int, default=10
        FedAvg rounds within each cluster, from the global model (the round with the lowest validation
        loss is kept).
    min_defaults : int, default=20
        Fewest defaults a bank needs in its training and validation rows together to personalise.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1, le=1000, description="Most local fine-tuning epochs (chosen by k-fold CV).")
    folds: int = Field(5, ge=2, le=20, description="Folds of the cross-validation that picks the epochs.")
    patience: int = Field(
        3,
        ge=0,
        le=1000,
        description="A fold stops fine-tuning after this many epochs without gain (0 = never).",
    )
    select: Literal["auc", "loss"] = Field(
        "auc", description="What the cross-validation minimises: 1 - AUC (ranking, as KS) or log-loss."
    )
    lr: float | None = Field(
        None, gt=0.0, le=10.0, description="Fine-tuning learning rate; empty = training.lr."
    )
    ditto_lambda: float = Field(
        0.1, ge=0.0, le=1000.0, description="Ditto: weight of the pull towards the global model."
    )
    clusters: Annotated[int, Field(ge=1, le=50)] | Literal["auto"] = Field(
        "auto", description="Clustered: number of bank clusters, or 'auto' (silhouette)."
    )
    max_clusters: int = Field(3, ge=1, le=50, description="Clustered: most clusters 'auto' considers.")
    cluster_rounds: int = Field(10, ge=1, le=1000, description="Clustered: FedAvg rounds within a cluster.")
    min_defaults: int = Field(
        20, ge=1, le=100_000, description="Fewest defaults in a bank's train + val rows to personalise."
    )
