"""SecureBoost-style vertical gradient-boosted trees: one module per role plus the messages between them."""

from fedrisk.protocol.secureboost.label_holder import (
    PROTECTIONS,
    Cost,
    InProcessLink,
    PartnerLink,
    VerticalSession,
)
from fedrisk.protocol.secureboost.partner import SecureBoostPartner

__all__ = ["PROTECTIONS", "Cost", "InProcessLink", "PartnerLink", "SecureBoostPartner", "VerticalSession"]
