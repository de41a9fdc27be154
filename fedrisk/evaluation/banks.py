"""The per-bank view of a horizontal run: does federation pay for each bank, and for the smallest ones?

``results.json`` gets ``banks`` (a verdict per bank and method from the interval of its KS gain, and the
smallest banks' view) and, for a personalised run, ``personalization`` (which model each bank kept in each
seed, and every fallback to the global model with its reason).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedrisk.core.metrics import ks_statistic
from fedrisk.evaluation.uncertainty import summarize
from fedrisk.runner.units import Unit

UPLIFT_KEYS = {"federated": "uplift", "personalized": "uplift_personalized"}
"""Where each federated method's gain over siloed sits in a ``parties.<bank>`` block."""
SMALLEST_SHARE = 1 / 3
"""The smallest banks' view covers the smallest third of the banks (by test applicants), at least one."""


def verdict(points: Mapping | None) -> str | None:
    """``pays`` when the KS gain's interval is above zero, ``costs`` when below, else ``unclear``."""
    if not points or points.get("mean") is None:
        return None
    lo, hi = points.get("ci") or (None, None)
    if lo is not None and lo > 0:
        return "pays"
    if hi is not None and hi < 0:
        return "costs"
    return "unclear"


def _seed_ks(units: Sequence[Unit], banks: Sequence[str], method: str) -> np.ndarray:
    """``(seeds, banks)`` KS of ``method`` on each bank's own test applicants (NaN where missing)."""
    out = np.full((len(units), len(banks)), np.nan)
    for i, unit in enumerate(units):
        outcome = unit.outcomes.get(method)
        if outcome is None:
            continue
        for key, scored in outcome.scores.items():
            if key.split == "test" and key.party in banks:
                out[i, list(banks).index(key.party)] = ks_statistic(scored.y, scored.p)
    return out


def banks_summary(units: Sequence[Unit], parties: Mapping[str, Mapping], level: float) -> dict:
    """``{"verdicts": {bank: {method: verdict}}, "smallest": {...}}``; empty unless several banks."""
    if len(parties) < 2:
        return {}
    verdicts = {
        bank: {
            m: verdict(block.get(key, {}).get("ks_points")) for m, key in UPLIFT_KEYS.items() if key in block
        }
        for bank, block in parties.items()
    }
    by_size = sorted(parties, key=lambda b: (parties[b].get("n_test") or 0, b))
    smallest = by_size[: max(1, int(round(len(by_size) * SMALLEST_SHARE)))]
    silo = _seed_ks(units, smallest, "siloed")
    gains = {}
    for method in UPLIFT_KEYS:
        ks = _seed_ks(units, smallest, method)
        if np.isfinite(ks).any() and np.isfinite(silo).any():
            gains[method] = summarize(np.nanmean(ks - silo, axis=1), None, level)
    total = sum(parties[b].get("n_test") or 0 for b in parties)
    return {
        "verdicts": verdicts,
        "smallest": {
            "banks": smallest,
            "share_of_test_applicants": sum(parties[b].get("n_test") or 0 for b in smallest) / max(total, 1),
            "ks_points": gains,
        },
    }


def personalization_summary(units: Sequence[Unit]) -> dict | None:
    """What each bank kept in each seed (personal, recalibrated or global model) and every fallback."""
    runs = [
        (u.seed, u.outcomes["personalized"].extra.get("personalization"))
        for u in units
        if "personalized" in u.outcomes
    ]
    runs = [(seed, run) for seed, run in runs if run]
    if not runs:
        return None
    kept: dict[str, dict[str, int]] = {}
    fallbacks = []
    for seed, run in runs:
        for bank, report in sorted(run.get("banks", {}).items()):
            counts = kept.setdefault(bank, {})
            counts[report.get("model", "global")] = counts.get(report.get("model", "global"), 0) + 1
            if report.get("fallback"):
                fallbacks.append({"seed": seed, "bank": bank, "reason": report["fallback"]})
    return {
        "mode": runs[0][1].get("mode"),
        "kept": dict(sorted(kept.items())),
        "fallbacks": fallbacks,
        "clusters": {f"seed={seed}": run.get("clusters", []) for seed, run in runs if run.get("clusters")},
    }
