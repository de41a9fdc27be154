"""The `[federation.vertical]` section: how the bank, tax authority and platform train one split model.

Validated once at the edge; the driver, the ServerApp and the ClientApps take this object (the apps get it
as JSON in Flower's run config, because run-config values must be scalars).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fedrisk.config.model import Width


class VerticalConfig(BaseModel):
    """Split learning across holders: alignment, architecture, batching.

    Parameters
    ----------
    batch_size : int or None, default=None
        Applicants per gradient step; None uses ``[training].batch_size``. Every step is one round trip
        to every holder, so larger batches are the main lever on wall time.
    full_batch : bool, default=False
        One gradient step per epoch over all training applicants (overrides ``batch_size``).
    embedding_dim : int, default=4
        Width of each holder's embedding in the split-NN (``mlp``); a linear bottom always sends 1 number
        per applicant (its share of the log-odds).
    bottom_hidden : list of int or None, default=None
        Hidden widths of each holder's bottom network in the split-NN; None takes ``[model].hidden``, so the
        federated network and the siloed MLP are set by the same key.
    dropout : float or None, default=None
        Dropout in the split-NN; None takes ``[model].dropout``.
    top_hidden : list of int, default=[16]
        Hidden widths of the label holder's top network in the split-NN.
    psi_parallel : bool, default=True
        Align the label holder with each partner in separate processes.
    psi_fpr : float or None, default=None
        False-positive probability per PSI run; None picks a practically-zero one.
    """

    model_config = ConfigDict(extra="forbid")

    batch_size: int | None = Field(
        None,
        ge=1,
        description="Applicants per gradient step (one round trip to every holder); empty = [training].batch_size.",
    )
    full_batch: bool = Field(
        False, description="One gradient step per epoch over all training applicants (overrides batch_size)."
    )
    embedding_dim: int = Field(
        4, ge=1, le=256, description="Embedding width per holder in the split-NN (a linear bottom sends 1)."
    )
    bottom_hidden: list[Width] | None = Field(
        None,
        description="Hidden widths of each holder's bottom network in the split-NN (mlp); empty = model.hidden.",
    )
    dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Dropout in the split-NN's bottom and top networks; empty = model.dropout.",
    )
    top_hidden: list[Width] = Field(
        [16], description="Hidden widths of the label holder's top network (mlp)."
    )
    psi_parallel: bool = Field(True, description="Run the PSI with each partner in its own process.")
    psi_fpr: float | None = Field(
        None, gt=0.0, lt=1.0, description="PSI false-positive probability per run; empty = practically zero."
    )

    def step_size(self, default_batch: int, n_train: int) -> int:
        """Rows per gradient step for ``n_train`` training applicants."""
        if self.full_batch:
            return max(n_train, 1)
        return self.batch_size or default_batch
