"""The `[audit]` section: each audit's settings (schema only; the audits live in `fedrisk.audit`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedrisk.config.horizontal import STRATEGY_NAMES


class FairnessConfig(BaseModel):
    """The ``[audit.fairness]`` section.

    Parameters
    ----------
    enabled : bool, default=False
    groups : list of str
        Label-holder columns to group by (the banks' KYC columns). Numeric columns are cut into quintiles.
    split : str
        Which scored split to audit (``test``; ``oot`` when the data has a later cohort).
    approval_rate : float or None
        Share of each bank's applicants approved (None = ``evaluation.approval_rate``).
    min_group_size : int
        Groups smaller than this are listed but left out of the cross-group differences.
    gap_group, gap_group_value, gap_reference
        The gap followed across methods: by default rural vs urban approval rates.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(False, description="Run the group-fairness audit.")
    groups: list[str] = Field(
        ["region_type", "sector", "size_class"], min_length=1, description="Label-holder columns to group by."
    )
    split: str = Field("test", min_length=1, description="Scored split to audit ('test' or 'oot').")
    approval_rate: float | None = Field(
        None, gt=0.0, le=1.0, description="Share approved per bank; empty = evaluation.approval_rate."
    )
    min_group_size: int = Field(
        30, ge=1, le=10_000_000, description="Smallest group counted in the cross-group differences."
    )
    gap_group: str = Field("region_type", description="Column of the followed gap.")
    gap_group_value: str = Field("rural", description="The group whose gap is followed.")
    gap_reference: str = Field("urban", description="The group it is compared with.")

    @model_validator(mode="after")
    def _gap_group_listed(self) -> FairnessConfig:
        if self.gap_group not in self.groups:
            raise ValueError(f"gap_group '{self.gap_group}' must be one of groups {self.groups}")
        if len(set(self.groups)) != len(self.groups):
            raise ValueError("groups must be distinct")
        return self


DefenceKind = Literal["none", "noise", "clip", "max_norm"]


class DefenceSpec(BaseModel):
    """One gradient perturbation the label holder applies before sending gradients to partners."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: DefenceKind = Field(
        "none", description="none | noise (isotropic Gaussian) | clip (norm clipping) | max_norm (Li et al.)."
    )
    strength: float = Field(
        0.0,
        ge=0.0,
        le=1e4,
        description=(
            "noise: noise norm in units of the batch's largest gradient norm; clip: quantile of the batch's "
            "gradient norms to clip to (0 = the smallest, <= 1); ignored by none and max_norm."
        ),
    )

    @model_validator(mode="after")
    def _quantile(self) -> DefenceSpec:
        if self.kind == "clip" and self.strength > 1.0:
            raise ValueError(
                f"clip strength is a quantile of the batch's norms, in [0, 1] (got {self.strength})"
            )
        return self

    @property
    def label(self) -> str:
        return self.kind if self.kind in ("none", "max_norm") else f"{self.kind}={self.strength:g}"


def _default_defences() -> list[DefenceSpec]:
    return [
        DefenceSpec(kind="none"),
        DefenceSpec(kind="noise", strength=1.0),
        DefenceSpec(kind="clip", strength=0.0),
        DefenceSpec(kind="max_norm"),
    ]


class LabelLeakageConfig(BaseModel):
    """The label-leakage audit of vertical federation (skipped for horizontal runs)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(False, description="Run the label-leakage audit after each (point, seed).")
    batch_size: int | None = Field(
        None,
        ge=2,
        le=10_000_000,
        description="Applicants per gradient step of the audited run; empty = the federated run's own step size.",
    )
    epochs: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Training epochs of the audited run; empty = [training].epochs (early stopping applies).",
    )
    max_train_rows: int | None = Field(
        None,
        ge=100,
        le=100_000_000,
        description="Cap on training applicants (a random subset) for a cheaper audit; empty = all.",
    )
    partners: list[str] | None = Field(
        None, description="Passive holders to audit; empty = every partner in the run."
    )
    defences: list[DefenceSpec] = Field(
        default_factory=_default_defences,
        min_length=1,
        description="Gradient perturbations to compare; 'none' is added first if missing (the KS reference).",
    )


Method = Literal["siloed", "centralized", "federated"]


class DPSGDConfig(BaseModel):
    """The "with DP" retraining of every audited model."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(True, description="Also attack DP-trained versions of every model.")
    noise_multiplier: float = Field(
        1.0,
        gt=0.0,
        le=1e4,
        description="Gaussian noise std over the clipping norm (DP-SGD; server-fixed DP for horizontal).",
    )
    target_epsilon: float | None = Field(
        None,
        gt=0.0,
        le=1e6,
        description="If set, overrides noise_multiplier: the noise is solved so the full epoch budget spends this ε.",
    )
    max_grad_norm: float = Field(
        1.0, gt=0.0, le=1e6, description="Per-example gradient clipping norm (DP-SGD)."
    )
    delta: float = Field(1e-5, gt=0.0, lt=1.0, description="δ at which ε is reported.")


class MembershipConfig(BaseModel):
    """The membership-inference audit (LiRA, Carlini et al. 2022) of every method's model."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(False, description="Run the membership audit after each (point, seed).")
    methods: list[Method] = Field(
        ["siloed", "centralized", "federated"], min_length=1, description="Methods whose models are attacked."
    )
    n_population: int = Field(
        2000,
        ge=20,
        le=10_000_000,
        description="Applicants the attacker samples from (train + test, at random); each model trains on half.",
    )
    n_shadow: int = Field(8, ge=2, le=256, description="Shadow models per target (each on a random half).")
    n_targets: int = Field(
        4,
        ge=1,
        le=257,
        description="Models used in turn as the target (scores pooled; steadier low-FPR TPRs).",
    )
    target_fpr: list[float] = Field(
        [0.001, 0.01], min_length=1, description="False-positive rates at which the attack's TPR is reported."
    )
    fix_variance: bool = Field(
        True, description="One pooled variance for all examples (Carlini et al.'s advice below ~64 shadows)."
    )
    dp: DPSGDConfig = Field(default_factory=DPSGDConfig)

    @model_validator(mode="after")
    def _targets_and_rates(self) -> MembershipConfig:
        if self.n_targets > self.n_shadow + 1:
            raise ValueError(
                f"n_targets ({self.n_targets}) must be at most n_shadow + 1 ({self.n_shadow + 1})"
            )
        bad = [f for f in self.target_fpr if not 0.0 < f < 1.0]
        if bad:
            raise ValueError(f"target_fpr values must be in (0, 1), got {bad}")
        return self


Attack = Literal["sign_flip", "scale", "label_flip"]


class RobustnessConfig(BaseModel):
    """The ``[audit.robustness]`` section.

    Parameters
    ----------
    enabled : bool, default=False
    strategies : list of str
        Flower strategies to compare, by registry name (``federation.horizontal.strategy``).
    attack : {"sign_flip", "scale", "label_flip"}
    scale : float
        Update multiplier of ``sign_flip`` / ``scale``.
    poisoned_banks : int
        How many banks attack (the largest by training rows); must stay below half the banks.
    dropout_fraction : float
        Share of banks absent from each training round (0 = no dropout run).
    dropout_secagg : bool
        Also run the dropout under SecAgg+ (FedAvg), to show which dropout levels it survives.
    rounds : int or None
        Rounds of every audit run (None = the experiment's ``federation.horizontal.rounds``).
    keep : {"best", "last"} or None
        Which round's model each audit run keeps (None = the experiment's). ``best`` selects by the
        banks' reported validation loss, which an attacker with flipped labels also poisons; ``last``
        isolates the aggregation rule.
    strategy_params : dict
        Per-strategy Flower parameters overriding the audit's defaults (e.g. ``{"fedtrimmedavg": {"beta": 0.3}}``).
    max_ks_drop : float
        The goal: an attacked robust strategy within this much KS (0.02 = 2 points) of its clean run.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(False, description="Run the robustness audit (horizontal topology only).")
    strategies: list[str] = Field(
        ["fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum"],
        min_length=1,
        description="Flower strategies to compare clean vs attacked (registry names).",
    )
    attack: Attack = Field(
        "sign_flip", description="sign_flip | scale (update poisoning) | label_flip (data)."
    )
    scale: float = Field(
        5.0, gt=0.0, le=1e6, description="Update multiplier of the sign_flip and scale attacks."
    )
    poisoned_banks: int = Field(
        1, ge=0, le=49, description="Attacking banks (the largest); 0 = clean runs only."
    )
    dropout_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Share of banks absent from each training round (0 = skip)."
    )
    dropout_secagg: bool = Field(True, description="Also run the dropout under SecAgg+ (FedAvg).")
    rounds: int | None = Field(
        None, ge=1, le=10_000, description="Rounds per audit run; empty = the experiment's."
    )
    keep: Literal["best", "last"] | None = Field(
        None,
        description="Round each audit run keeps: 'best' (federated val loss) or 'last'; empty = the experiment's.",
    )
    strategy_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-strategy Flower parameters overriding the audit's defaults."
    )
    max_ks_drop: float = Field(
        0.02, gt=0.0, lt=1.0, description="Goal: attacked KS within this of clean (0.02 = 2 points)."
    )

    @field_validator("strategies")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        names = [n.lower() for n in names]
        unknown = [n for n in names if n not in STRATEGY_NAMES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; use {', '.join(STRATEGY_NAMES)}")
        if len(set(names)) != len(names):
            raise ValueError("strategies must be distinct")
        return names

    @model_validator(mode="after")
    def _params_for_listed(self) -> RobustnessConfig:
        extra = sorted(set(self.strategy_params) - set(self.strategies))
        if extra:
            raise ValueError(f"strategy_params for strategies not listed: {extra}")
        return self


class AuditConfig(BaseModel):
    """Privacy, robustness and fairness audits run beside every uplift (all off by default)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    membership: MembershipConfig = Field(default_factory=MembershipConfig)
    label_leakage: LabelLeakageConfig = Field(default_factory=LabelLeakageConfig)
    robustness: RobustnessConfig = Field(default_factory=RobustnessConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)

    def enabled(self) -> list[str]:
        """Names of the audits switched on, in the order they run."""
        return [name for name in AUDITS if getattr(self, name).enabled]


AUDITS = ("fairness", "label_leakage", "membership", "robustness")
