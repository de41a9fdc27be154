"""The out-of-time view: every method scored on the later cohort of applicants, beside the in-time test.

Credit models are validated on applicants who came after the development window; a model that holds up
in time (``test``) but not out of time (``oot``) has learnt something that drifted. ``results.json``
carries it as ``out_of_time`` (same shapes as ``methods`` and ``uplift``) whenever the data has a later
cohort (the synthetic world has one by default).
"""

from __future__ import annotations

from collections.abc import Sequence

from fedrisk.evaluation.summary import summarize_point
from fedrisk.runner.units import Unit

OOT_SPLIT = "oot"


def out_of_time_summary(
    units: Sequence[Unit], methods: Sequence[str], n_boot: int, level: float, approval_rate: float
) -> dict | None:
    """``{"methods": {m: {"ks", "auc"}}, "uplift": {...}[, "uplift_personalized"]}`` on the later cohort."""
    if not any(key.split == OOT_SPLIT for u in units for o in u.outcomes.values() for key in o.scores):
        return None
    block = summarize_point(units, methods, n_boot, level, approval_rate, split=OOT_SPLIT, with_parties=False)
    out = {
        "methods": {m: {k: v[k] for k in ("ks", "auc")} for m, v in block["methods"].items()},
        "uplift": {
            k: v for k, v in block["uplift"].items() if k in ("ks_relative", "ks_points", "auc_points")
        },
    }
    if "uplift_personalized" in block:
        out["uplift_personalized"] = block["uplift_personalized"]
    return out
