"""Run one (point, seed)'s enabled audits after its methods; each result is saved atomically like a method."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fedrisk.data.outcome import MethodOutcome


def run_audit(
    name: str, config, setting, seed: int, outcomes: Mapping[str, MethodOutcome], workdir: Path
) -> dict:
    """Dispatch to the audit module; returns its JSON-serialisable result."""
    cfg = getattr(config.audit, name)
    if name == "fairness":
        from fedrisk.audit.fairness import fairness_audit

        return fairness_audit(config, setting, outcomes, cfg)
    if name == "label_leakage":
        from fedrisk.audit.label_leakage import label_leakage_audit

        return label_leakage_audit(config, setting, seed, cfg)
    if name == "membership":
        from fedrisk.audit.membership import membership_audit

        return membership_audit(config, setting, seed, cfg)
    if name == "robustness":
        from fedrisk.audit.robustness import robustness_audit

        return robustness_audit(config, setting, seed, cfg, workdir)
    raise ValueError(f"unknown audit {name!r}")
