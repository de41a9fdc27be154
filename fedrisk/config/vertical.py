"""The `[federation.vertical]` section: how the bank, tax authority and platform train one split model.

Validated once at the edge; the driver, the ServerApp and the ClientApps take this object (the apps get it
as JSON in Flower's run config, because run-config values must be scalars).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedrisk.config.model import Width
from fedrisk.core.errors import FedriskError

Protection = Literal["none", "he", "noise", "label_dp"]
PROTECTIONS: tuple[str, ...] = ("none", "he", "noise", "label_dp")
#: Protection knobs and the protection each belongs to (a knob set for another protection is refused).
PROTECTION_KNOBS = {
    "he_scheme": "he",
    "he_key_bits": "he",
    "noise_multiplier": "noise",
    "label_dp_epsilon": "label_dp",
}


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
    protection : {"none", "he", "noise", "label_dp"}, default="none"
        What protects the label holder's labels from the partners (``docs/protection.md``). ``"none"``
        sends partners d loss / d embedding per row in the clear; ``"he"`` (vertical logistic regression
        only) sends it homomorphically encrypted and partners get only their own masked, then unmasked,
        aggregate gradient; ``"noise"`` adds Gaussian noise to each partner's gradients; ``"label_dp"``
        trains on labels randomised with epsilon-label differential privacy.
    he_scheme : {"ckks", "paillier"}, default="ckks"
        ``"he"``: CKKS (TenSEAL, packed, fast) or Paillier (python-paillier, exact, slow).
    he_key_bits : int or None, default=None
        ``"he"``: CKKS ring degree (8192, 16384) or Paillier modulus bits (1024, 2048, 3072); None = 8192 /
        2048.
    noise_multiplier : float, default=1.0
        ``"noise"``: per-coordinate noise std as a multiple of the batch's largest gradient norm divided by
        sqrt(embedding width) (a noise vector about this many times the largest gradient long).
    label_dp_epsilon : float, default=2.0
        ``"label_dp"``: epsilon of randomized response on the training labels (each flipped with
        probability 1 / (1 + e^epsilon)); validation and test keep the true labels.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    batch_size: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
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

    protection: Protection = Field(
        "none",
        description="Label protection: 'none', 'he' (encrypted gradients, logistic only), 'noise' (Gaussian "
        "noise on partners' gradients) or 'label_dp' (randomised training labels). See docs/protection.md.",
    )
    he_scheme: Literal["ckks", "paillier"] = Field(
        "ckks", description="protection = 'he': 'ckks' (TenSEAL, packed, fast) or 'paillier' (exact, slow)."
    )
    he_key_bits: int | None = Field(
        None,
        ge=1024,
        le=32768,
        description="protection = 'he': CKKS ring degree (8192, 16384) or Paillier bits (1024, 2048, 3072); "
        "empty = 8192 / 2048.",
    )
    noise_multiplier: float = Field(
        1.0,
        gt=0.0,
        le=100.0,
        description="protection = 'noise': noise std per coordinate, in units of the batch's largest "
        "gradient norm / sqrt(width).",
    )
    label_dp_epsilon: float = Field(
        2.0, gt=0.0, le=50.0, description="protection = 'label_dp': epsilon of randomized response on labels."
    )

    @model_validator(mode="after")
    def _knobs_match_protection(self) -> VerticalConfig:
        """A protection knob set for another protection is refused (every key is honoured or rejected)."""
        for knob, owner in PROTECTION_KNOBS.items():
            # "set to a non-default value": the apps re-validate a full JSON dump of this section
            changed = getattr(self, knob) != type(self).model_fields[knob].default
            if knob in self.model_fields_set and changed and self.protection != owner:
                raise FedriskError(
                    f"federation.vertical.{knob}",
                    f"applies to protection = {owner!r}, but protection is {self.protection!r}",
                    f"remove {knob} or set protection = {owner!r}",
                )
        if self.protection == "he" and self.he_key_bits is not None:
            allowed = {"ckks": (8192, 16384), "paillier": (1024, 2048, 3072)}[self.he_scheme]
            if self.he_key_bits not in allowed:
                raise FedriskError(
                    "federation.vertical.he_key_bits",
                    f"a {self.he_scheme} key of {self.he_key_bits} bits is not supported",
                    f"use one of {list(allowed)}",
                )
        return self

    def step_size(self, default_batch: int, n_train: int) -> int:
        """Rows per gradient step for ``n_train`` training applicants."""
        if self.full_batch:
            return max(n_train, 1)
        return self.batch_size or default_batch
