"""Which figures a run gets, drawing them into DIR/figures/, and the Markdown that shows them."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fedrisk.core.jsonio import atomic_write_bytes
from fedrisk.report import banks, party_plots, plots
from fedrisk.report.reading import epsilon_key, headline_scores

FIGURE_NOTES = {
    "ks_curves.png": (
        "KS curves",
        "Cumulative share of bad and good applicants as the cut-off moves down the score; the black bar is KS, "
        "the widest gap between the two.",
    ),
    "roc_curves.png": (
        "ROC curves",
        "The same applicants scored by every method; higher and further left is better. Federated is the "
        "dashed line on top; where it hides nothing, it coincides with centralized (the pale wide line).",
    ),
    "uplift_sweep.png": (
        "KS uplift across the sweep",
        "How the relative KS gain of federated over siloed moves with the swept setting; the band is the CI.",
    ),
    "privacy_utility.png": (
        "Privacy–utility trade-off",
        "Federated KS at each privacy budget ε; the dashed line is federation without DP, the dotted line "
        "the bank alone. Where the curve falls below the dotted line, DP has cost all the gain.",
    ),
    "training_curves.png": (
        "Training curves",
        "Loss per epoch (baselines) or per federated round, mean over seeds with a ±1 sd band; the y-axis "
        "is zoomed past the first step.",
    ),
    "per_bank_uplift.png": (
        "KS gain per bank",
        "Each bank's KS gain from federation on its own test applicants, smallest bank on top, with its "
        "interval: small banks are where federation should help most.",
    ),
    "uplift_vs_size.png": (
        "KS gain by bank size",
        "Each bank's KS gain over its own model (federated, and personalized when run) against its size: "
        "where federation pays and for whom.",
    ),
    "coverage_ks.png": (
        "KS by partner coverage",
        "Test applicants the partner knows vs does not know: federation can only help where a partner has data.",
    ),
}
FIGURE_FILES = tuple(FIGURE_NOTES)
_RETIRED = ("per_bank_ks.png",)  # drawn by earlier versions; removed when a report is rebuilt


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def draw_figures(
    directory: Path,
    results: Mapping,
    coverage: pd.DataFrame,
    history: pd.DataFrame,
    point: str,
    methods: Sequence[str],
    caption: str,
) -> list[str]:
    """Draw every figure that applies to this run; remove stale ones; return the files written."""
    topology = results.get("topology", "vertical")
    scored, seed, parties = headline_scores(directory, point, results.get("seeds", []))
    if topology == "horizontal":
        subject = f"all banks' test sets pooled ({len(parties)} banks)"
    else:
        subject = f"test set of {parties[0] if parties else 'the label holder'}"
    unit_caption = f"{caption} · figure: point {point}, seed {seed}"
    if "point" in history:
        history = history[history["point"].astype(str) == point]
    sweep = results.get("sweep") or []
    eps = epsilon_key(results)
    point_caption = f"{caption} · point {point}"
    figures = {
        "ks_curves.png": lambda: plots.ks_curves(scored, unit_caption, subject),
        "roc_curves.png": lambda: plots.roc_curves(scored, unit_caption, subject),
        "uplift_sweep.png": lambda: plots.uplift_vs_sweep(sweep, caption) if sweep else None,
        "privacy_utility.png": lambda: plots.privacy_utility(sweep, eps, caption) if eps else None,
        "training_curves.png": lambda: plots.training_curves(history, point_caption),
        "per_bank_uplift.png": lambda: (
            party_plots.per_bank_uplift(results.get("parties") or {}, point_caption)
            if topology == "horizontal"
            else None
        ),
        "uplift_vs_size.png": lambda: (
            banks.uplift_vs_size(results.get("parties") or {}, point_caption)
            if topology == "horizontal"
            else None
        ),
        "coverage_ks.png": lambda: (
            party_plots.coverage_ks(coverage, methods, point_caption) if topology == "vertical" else None
        ),
    }
    for retired in _RETIRED:
        (directory / "figures" / retired).unlink(missing_ok=True)
    written = []
    for file, draw in figures.items():
        path = directory / "figures" / file
        fig = draw()
        if fig is None:
            path.unlink(missing_ok=True)
            continue
        _save(fig, path)
        written.append(file)
    return written


def figures_section(figures: Sequence[str]) -> str:
    parts = ["## Figures"]
    for file in figures:
        title, note = FIGURE_NOTES[file]
        parts.append(f"### {title}\n\n{note}\n\n![{title}](figures/{file})")
    return "\n\n".join(parts)
