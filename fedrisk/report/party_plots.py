"""Figures per party: the KS uplift of each bank, and KS on the applicants each partner does / does not know.

Dots with interval whiskers on a zoomed axis rather than bars from zero: KS values of 0.30 and 0.36 are
a large difference that bars on a 0–1 axis flatten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedrisk.report.style import dig, method_color, new_figure, styled, zoom


def banks_by_size(parties: Mapping[str, Mapping]) -> list[str]:
    """Banks by test-set size, smallest first: small banks are where federation should help most."""
    return sorted(parties, key=lambda b: (parties[b].get("n_test") or 0, b))


@styled
def per_bank_uplift(parties: Mapping[str, Mapping], caption: str) -> Figure | None:
    """Each bank's KS gain from federation (KS points, federated − siloed) with its interval, smallest bank on top.

    A whisker that crosses the zero line means that bank's gain is not distinguishable from noise.
    """
    banks = [b for b in banks_by_size(parties) if dig(parties[b], "uplift", "ks_points", "mean") is not None]
    if not banks:
        return None
    fig = new_figure(7.2, 1.5 + 0.36 * len(banks), caption, "KS gain from federation, per bank")
    ax = fig.subplots()
    y = np.arange(len(banks))[::-1]
    mean = np.array([parties[b]["uplift"]["ks_points"]["mean"] for b in banks], dtype=float)
    ci = [parties[b]["uplift"]["ks_points"].get("ci") or (None, None) for b in banks]
    lo = np.array([np.nan if c[0] is None else c[0] for c in ci], dtype=float)
    hi = np.array([np.nan if c[1] is None else c[1] for c in ci], dtype=float)
    color = method_color("federated")
    ax.errorbar(
        mean,
        y,
        xerr=[np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)],
        fmt="o",
        color=color,
        ecolor=color,
        elinewidth=2,
        capsize=3,
        label="KS federated − KS siloed [CI]",
    )
    ax.axvline(0, color="#444444", lw=1, ls="--")
    ax.set_yticks(y, [f"{b} (n = {parties[b].get('n_test', '?'):,})" for b in banks])
    ax.set_xlabel("KS federated − KS siloed on the bank's own test applicants [CI]; dashed: no gain")
    ax.grid(axis="y", visible=False)
    return fig


@styled
def coverage_ks(table: pd.DataFrame, methods: Sequence[str], caption: str) -> Figure | None:
    """KS on applicants each partner covers vs does not cover, per method (one panel per partner).

    ``table`` has columns partner, segment ("covered"/"uncovered"), method, ks, ks_lo, ks_hi, n.
    """
    if table.empty:
        return None
    partners = list(dict.fromkeys(table["partner"]))
    fig = new_figure(4.0 * len(partners) + 0.6, 4.4, caption, "KS by partner coverage (test applicants)")
    axes = np.atleast_1d(fig.subplots(1, len(partners), sharey=True))
    segments = ["covered", "uncovered"]
    step = 0.6 / max(1, len(methods))
    shown: list[float] = []
    for ax, partner in zip(axes, partners, strict=True):
        rows = table[table["partner"] == partner]
        x = np.arange(len(segments), dtype=float)
        for index, method in enumerate(methods):
            sel = rows[rows["method"] == method].set_index("segment").reindex(segments)
            mean = sel["ks"].to_numpy(dtype=float)
            lo, hi = sel["ks_lo"].to_numpy(dtype=float), sel["ks_hi"].to_numpy(dtype=float)
            ax.errorbar(
                x + (index - (len(methods) - 1) / 2) * step,
                mean,
                yerr=[np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)],
                fmt="o",
                markersize=7,
                color=method_color(method, index),
                elinewidth=2,
                capsize=3,
                label=method,
            )
            shown += list(lo) + list(hi) + list(mean)
        n = rows.groupby("segment")["n"].max().reindex(segments)
        labels = [f"{s}\n(n ≈ {v:.0f})" if np.isfinite(v) else s for s, v in zip(segments, n, strict=True)]
        ax.set_xticks(x, labels)
        ax.set_xlim(-0.6, len(segments) - 0.4)
        ax.set_title(f"applicants known to {partner}?")
        ax.grid(axis="x", visible=False)
    zoom(axes[0], shown, floor=0.0, ceil=1.0)
    axes[0].set_ylabel("KS (mean over seeds, CI over seeds)")
    axes[0].legend(frameon=False, loc="best")
    return fig
