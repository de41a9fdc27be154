"""The `[audit]` section: each audit's settings, composed from the module that runs it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fedrisk.audit.fairness import FairnessConfig
from fedrisk.audit.label_leakage import LabelLeakageConfig
from fedrisk.audit.membership import MembershipConfig
from fedrisk.audit.robustness import RobustnessConfig


class AuditConfig(BaseModel):
    """Privacy, robustness and fairness audits run beside every uplift (all off by default)."""

    model_config = ConfigDict(extra="forbid")

    membership: MembershipConfig = Field(default_factory=MembershipConfig)
    label_leakage: LabelLeakageConfig = Field(default_factory=LabelLeakageConfig)
    robustness: RobustnessConfig = Field(default_factory=RobustnessConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)

    def enabled(self) -> list[str]:
        """Names of the audits switched on, in the order they run."""
        return [name for name in AUDITS if getattr(self, name).enabled]


AUDITS = ("fairness", "label_leakage", "membership", "robustness")
