"""The out-of-time table: each method's KS on the later cohort beside the in-time test (results.out_of_time)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedrisk.report.fmt import fmt_ci, md_table
from fedrisk.report.style import dig


def section(results: Mapping, methods: Sequence[str]) -> str:
    """Markdown, or "" when the run has no later cohort."""
    block = results.get("out_of_time")
    if not block:
        return ""
    rows = []
    for method in methods:
        in_time, later = dig(results, "methods", method, "ks"), dig(block, "methods", method, "ks")
        if later is None:
            continue
        drop = (
            f"{later['mean'] - in_time['mean']:+.3f}"
            if in_time and in_time.get("mean") is not None and later.get("mean") is not None
            else "–"
        )
        rows.append([method, fmt_ci(in_time), fmt_ci(later), drop])
    gain = fmt_ci(dig(block, "uplift", "ks_points"))
    return (
        "## Out of time\n\nCredit models are validated on later applicants: the same models scored on the "
        "out-of-time cohort (applicants after the development window, never trained on), beside the in-time "
        f"test. KS gain of federated over siloed out of time: {gain} KS points.\n\n"
        + md_table(["Method", "KS in time (test)", "KS out of time", "change"], rows)
    )
