"""The report's figures: one function per figure, each returning a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot), so drawing never touches the
user's backend or global figure list, and tests can inspect the returned axes. Every function takes the
data it draws (not a results directory) plus a caption naming the config and seeds, which is printed
small at the bottom so a PNG pasted into a committee pack still says where it came from. Functions that
have nothing to draw return ``None``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

METHOD_COLORS = {"siloed": "#E69F00", "federated": "#0072B2", "centralized": "#009E73"}
"""Okabe–Ito colours (colour-blind safe), the same method in the same colour in every figure."""
METHOD_LABELS = {
    "siloed": "siloed (bank alone)",
    "federated": "federated",
    "centralized": "centralized (pooled data)",
}
BAD_COLOR, GOOD_COLOR = "#D55E00", "#0072B2"
_OTHER_COLORS = ("#CC79A7", "#56B4E9", "#F0E442", "#000000", "#999999")

_STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9.5,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def _styled(func: Callable[..., Figure | None]) -> Callable[..., Figure | None]:
    """Apply the report style while the figure's artists are created (rcParams are read at creation)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Figure | None:
        with matplotlib.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper


def _figure(width: float, height: float, caption: str, title: str) -> Figure:
    """A constrained-layout figure with a bold title on top and the provenance caption at the bottom."""
    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    fig.get_layout_engine().set(rect=(0, 0.045, 1, 0.955))
    fig.suptitle(title, fontweight="bold")
    fig.text(0.01, 0.008, caption, fontsize=8, color="#555555", ha="left", va="bottom")
    return fig


def method_color(method: str, index: int = 0) -> str:
    return METHOD_COLORS.get(method, _OTHER_COLORS[index % len(_OTHER_COLORS)])


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def is_no_dp(value: Any) -> bool:
    """True for the sweep spellings of ε = ∞ (DP off): None, "inf", "infinity", "∞", float('inf')."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in ("inf", "infinity", "∞", "+inf")
    return isinstance(value, int | float) and math.isinf(value) and value > 0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------------------
# Discrimination on the headline test set


def ks_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Share of applicants (riskiest first) and cumulative shares of bads and goods; index of the KS gap.

    Built on scikit-learn's ROC curve so tied scores are grouped exactly as in ``ks_statistic``.
    """
    y = np.asarray(y).astype(int)
    fpr, tpr, _ = roc_curve(y, np.asarray(p, dtype=float), drop_intermediate=False)
    n_bad = int(y.sum())
    share = (tpr * n_bad + fpr * (len(y) - n_bad)) / len(y)
    return share, tpr, fpr, int(np.argmax(np.abs(tpr - fpr)))


@_styled
def ks_curves(
    scored: Mapping[str, tuple[np.ndarray, np.ndarray]], caption: str, subject: str
) -> Figure | None:
    """One panel per method: cumulative share of bads and of goods as the cut-off moves down the scores.

    The vertical bar marks KS, the widest gap between the two curves — the cut-off at which the model
    separates bads from goods best.
    """
    scored = {m: yp for m, yp in scored.items() if len(np.unique(yp[0])) == 2}
    if not scored:
        return None
    fig = _figure(4.3 * len(scored) + 0.4, 4.6, caption, f"KS curves — {subject}")
    axes = np.atleast_1d(fig.subplots(1, len(scored), sharey=True))
    for ax, (method, (y, p)) in zip(axes, scored.items(), strict=True):
        share, tpr, fpr, i = ks_curve(y, p)
        ax.plot(share, tpr, color=BAD_COLOR, lw=2, label=f"{method}: cumulative share of bads")
        ax.plot(share, fpr, color=GOOD_COLOR, lw=2, ls="--", label=f"{method}: cumulative share of goods")
        ks = float(tpr[i] - fpr[i])
        ax.vlines(share[i], fpr[i], tpr[i], color="black", lw=2.5, label=f"{method}: KS gap")
        ax.annotate(
            f"KS = {abs(ks):.3f}\nat the riskiest {share[i]:.0%}",
            xy=(share[i], (tpr[i] + fpr[i]) / 2),
            xytext=(8, 0),
            textcoords="offset points",
            va="center",
            fontsize=10,
            bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "#bbbbbb", "alpha": 0.9},
        )
        ax.set_title(method_label(method), color=method_color(method))
        ax.set_xlabel("share of applicants declined (riskiest first)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.legend(
            handles=ax.lines[:2],
            labels=["bads caught", "goods declined"],
            loc="lower right",
            frameon=False,
        )
    axes[0].set_ylabel("cumulative share")
    return fig


@_styled
def roc_curves(
    scored: Mapping[str, tuple[np.ndarray, np.ndarray]], caption: str, subject: str
) -> Figure | None:
    """ROC curves of every method on the same applicants; AUC and KS in the legend."""
    from fedrisk.core.metrics import credit_metrics

    scored = {m: yp for m, yp in scored.items() if len(np.unique(yp[0])) == 2}
    if not scored:
        return None
    fig = _figure(6.2, 6.0, caption, f"ROC curves — {subject}")
    ax = fig.subplots()
    for index, (method, (y, p)) in enumerate(scored.items()):
        fpr, tpr, _ = roc_curve(np.asarray(y).astype(int), np.asarray(p, dtype=float))
        metrics = credit_metrics(y, p)
        ax.plot(
            fpr,
            tpr,
            color=method_color(method, index),
            lw=2,
            label=f"{method_label(method)}: AUC {metrics['auc']:.3f}, KS {metrics['ks']:.3f}",
        )
    ax.plot([0, 1], [0, 1], color="#999999", ls=":", lw=1.2, label="random ordering")
    ax.set_xlabel("false positive rate (share of goods declined)")
    ax.set_ylabel("true positive rate (share of bads caught)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", frameon=True)
    return fig


# ---------------------------------------------------------------------------------------------------------
# Sweeps


def _sweep_series(sweep: Sequence[Mapping], x_key: str) -> dict[str, list[tuple[Any, Mapping]]]:
    """Sweep points grouped into lines: one per combination of the keys other than ``x_key``."""
    groups: dict[str, list[tuple[Any, Mapping]]] = {}
    for entry in sweep:
        assignment = entry.get("assignment", {})
        others = [f"{k.split('.')[-1]} = {v}" for k, v in assignment.items() if k != x_key]
        groups.setdefault(", ".join(others), []).append((assignment.get(x_key), entry))
    return groups


def dig(block: Mapping | None, *path: str) -> Any:
    """``block[path[0]][path[1]]...``, or None where a level is missing (incomplete runs lack blocks)."""
    for key in path:
        if not isinstance(block, Mapping):
            return None
        block = block.get(key)
    return block


def _x_positions(values: Sequence[Any]) -> tuple[list[float], list[str] | None]:
    """Numeric sweep values plot as themselves; anything else as evenly spaced categories in sweep order."""
    if all(_is_number(v) for v in values):
        return [float(v) for v in values], None
    categories = list(dict.fromkeys(str(v) for v in values))
    return [float(categories.index(str(v))) for v in values], categories


@_styled
def uplift_vs_sweep(sweep: Sequence[Mapping], caption: str) -> Figure | None:
    """KS uplift (federated over siloed, relative) with its CI band against the first swept key.

    With more swept keys, one line per combination of the others.
    """
    if not sweep or not sweep[0].get("assignment"):
        return None
    x_key = next(iter(sweep[0]["assignment"]))
    all_x, categories = _x_positions([e["assignment"].get(x_key) for e in sweep])
    position = {id(e): x for e, x in zip(sweep, all_x, strict=True)}
    fig = _figure(7.8, 5.0, caption, f"KS uplift of federated over siloed vs {x_key.split('.')[-1]}")
    ax = fig.subplots()
    drawn = 0
    for index, (label, points) in enumerate(_sweep_series(sweep, x_key).items()):
        rows = []
        for _, entry in points:
            block = dig(entry, "uplift", "ks_relative")
            if block and block.get("mean") is not None:
                lo, hi = block.get("ci") or (None, None)
                rows.append((position[id(entry)], block["mean"], lo, hi))
        if not rows:
            continue
        rows.sort()
        x, mean, lo, hi = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
        color = _OTHER_COLORS[index % len(_OTHER_COLORS)] if label else METHOD_COLORS["federated"]
        ax.plot(x, 100 * mean, marker="o", lw=2, color=color, label=label or "KS uplift (mean over seeds)")
        ax.fill_between(
            x,
            100 * lo,
            100 * hi,
            color=color,
            alpha=0.18,
            lw=0,
            label=f"CI {label}" if label else "confidence interval",
        )
        drawn += 1
    if not drawn:
        return None
    ax.axhline(0, color="#444444", lw=1, ls="--", label="no uplift")
    if categories is not None:
        ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(x_key)
    ax.set_ylabel("KS uplift: KS(federated) / KS(siloed) − 1  [%]")
    ax.legend(frameon=False, loc="best")
    return fig


@_styled
def privacy_utility(sweep: Sequence[Mapping], epsilon_key: str, caption: str) -> Figure | None:
    """Federated KS against the privacy budget ε (log scale); ε = ∞ (no DP) and siloed KS as reference lines."""
    groups = _sweep_series(sweep, epsilon_key)
    fig = _figure(7.8, 5.0, caption, "Privacy–utility trade-off: federated KS vs privacy budget ε")
    ax = fig.subplots()
    drawn = 0
    for index, (label, points) in enumerate(groups.items()):
        color = METHOD_COLORS["federated"] if len(groups) == 1 else _OTHER_COLORS[index % len(_OTHER_COLORS)]
        suffix = f" ({label})" if label else ""
        finite, no_dp, siloed = [], [], []
        for value, entry in points:
            ks = dig(entry, "methods", "federated", "ks")
            silo = dig(entry, "methods", "siloed", "ks", "mean")
            if silo is not None:
                siloed.append(silo)
            if not ks or ks.get("mean") is None:
                continue
            if is_no_dp(value):
                no_dp.append(ks["mean"])
            elif _is_number(value) and value > 0:
                lo, hi = ks.get("ci") or (None, None)
                finite.append((float(value), ks["mean"], lo, hi))
        if not finite:
            continue
        finite.sort()
        x, mean, lo, hi = (np.array(c, dtype=float) for c in zip(*finite, strict=True))
        ax.plot(x, mean, marker="o", lw=2, color=color, label=f"federated with DP{suffix}")
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0, label=f"confidence interval{suffix}")
        if no_dp:
            ax.axhline(
                float(np.mean(no_dp)), color=color, ls="--", lw=1.5, label=f"federated, ε = ∞ (no DP){suffix}"
            )
        if siloed:
            ax.axhline(
                float(np.mean(siloed)),
                color=METHOD_COLORS["siloed"],
                ls=":",
                lw=1.8,
                label=f"siloed (bank alone){suffix}",
            )
        drawn += 1
    if not drawn:
        return None
    ax.set_xscale("log")
    ax.set_xlabel(f"privacy budget ε ({epsilon_key}); smaller = more private")
    ax.set_ylabel("KS on the test set")
    ax.legend(frameon=False, loc="best")
    return fig


# ---------------------------------------------------------------------------------------------------------
# Training


def _progress_column(rows: pd.DataFrame) -> str | None:
    for column in ("round", "epoch"):
        if column in rows and rows[column].notna().any():
            return column
    return None


@_styled
def training_curves(history: pd.DataFrame, caption: str) -> Figure | None:
    """Loss per epoch (baselines) or per round (federated): one panel per method, mean over seeds ± 1 sd.

    Rows of several parties in one seed (each bank's own model) are averaged first; columns that a
    method does not log are simply absent from its panel.
    """
    if history.empty or "method" not in history:
        return None
    panels = []
    for method, rows in history.groupby("method", sort=False):
        x_col = _progress_column(rows)
        losses = [c for c in ("train_loss", "val_loss") if c in rows and rows[c].notna().any()]
        if x_col and losses:
            panels.append((str(method), rows[rows[x_col].notna()], x_col, losses))
    if not panels:
        return None
    order = {m: i for i, m in enumerate(("siloed", "federated", "centralized"))}
    panels.sort(key=lambda panel: order.get(panel[0], len(order)))
    fig = _figure(4.4 * len(panels) + 0.4, 4.4, caption, "Training curves (mean over seeds, band = ±1 sd)")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for index, (ax, (method, rows, x_col, losses)) in enumerate(zip(axes, panels, strict=True)):
        color = method_color(method, index)
        for loss in losses:
            per_seed = (
                rows.groupby(["seed", x_col])[loss].mean()
                if "seed" in rows
                else rows.groupby(x_col)[loss].mean()
            )
            by_x = per_seed.groupby(level=x_col)
            mean, std = by_x.mean(), by_x.std().fillna(0.0)
            style = "-" if loss == "val_loss" else "--"
            name = "validation loss" if loss == "val_loss" else "training loss"
            ax.plot(mean.index, mean.values, ls=style, lw=2, color=color, label=f"{method}: {name}")
            ax.fill_between(mean.index, mean - std, mean + std, color=color, alpha=0.15, lw=0)
        ax.set_title(method_label(method), color=color)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(x_col)
        ax.set_ylabel("log loss")
        ax.legend(frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------------------
# Per party and per segment


def banks_by_size(parties: Mapping[str, Mapping]) -> list[str]:
    """Banks by test-set size, smallest first: small banks are where federation should help most."""
    return sorted(parties, key=lambda b: (parties[b].get("n_test") or 0, b))


def _bar_legend(ax: Any, n: int) -> None:
    """KS is in [0, 1]: keep the band above 1 for a one-row legend so it never hides a bar."""
    ax.set_ylim(0, 1.16)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(frameon=False, ncols=n, loc="upper center", columnspacing=1.2, handlelength=1.2)


@_styled
def per_bank_bars(parties: Mapping[str, Mapping], methods: Sequence[str], caption: str) -> Figure | None:
    """KS per bank and method with CI whiskers; banks sorted by test size, smallest first.

    Small banks are where federation should help most, so they come first.
    """
    banks = banks_by_size(parties)
    if not banks:
        return None
    fig = _figure(
        max(7.0, 1.3 * len(banks) * len(methods) / 2 + 2), 5.0, caption, "KS per bank (smallest bank first)"
    )
    ax = fig.subplots()
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(banks))
    for index, method in enumerate(methods):
        means, lower, upper = [], [], []
        for bank in banks:
            block = dig(parties[bank], "methods", method, "ks") or {}
            mean = block.get("mean")
            lo, hi = block.get("ci") or (None, None)
            means.append(np.nan if mean is None else mean)
            lower.append(0.0 if mean is None or lo is None else mean - lo)
            upper.append(0.0 if mean is None or hi is None else hi - mean)
        ax.bar(
            x + (index - (len(methods) - 1) / 2) * width,
            means,
            width,
            yerr=[lower, upper],
            capsize=3,
            color=method_color(method, index),
            label=method,
            error_kw={"elinewidth": 1.2, "ecolor": "#333333"},
        )
    ax.set_xticks(x, [f"{b}\n(n = {parties[b].get('n_test', '?')})" for b in banks])
    ax.set_xlabel("bank (test applicants per seed)")
    ax.set_ylabel("KS on the bank's own test set")
    _bar_legend(ax, len(methods))
    ax.grid(axis="x", visible=False)
    return fig


@_styled
def coverage_ks(table: pd.DataFrame, methods: Sequence[str], caption: str) -> Figure | None:
    """KS on applicants each partner covers vs does not cover, per method (one panel per partner).

    ``table`` has columns partner, segment ("covered"/"uncovered"), method, ks, ks_lo, ks_hi, n.
    """
    if table.empty:
        return None
    partners = list(dict.fromkeys(table["partner"]))
    fig = _figure(4.6 * len(partners) + 0.4, 4.8, caption, "KS by partner coverage (test applicants)")
    axes = np.atleast_1d(fig.subplots(1, len(partners), sharey=True))
    segments = ["covered", "uncovered"]
    width = 0.8 / max(1, len(methods))
    for ax, partner in zip(axes, partners, strict=True):
        rows = table[table["partner"] == partner]
        x = np.arange(len(segments))
        for index, method in enumerate(methods):
            sel = rows[rows["method"] == method].set_index("segment").reindex(segments)
            mean = sel["ks"].to_numpy(dtype=float)
            err = [
                np.nan_to_num(mean - sel["ks_lo"].to_numpy(dtype=float)),
                np.nan_to_num(sel["ks_hi"].to_numpy(dtype=float) - mean),
            ]
            ax.bar(
                x + (index - (len(methods) - 1) / 2) * width,
                mean,
                width,
                yerr=err,
                capsize=3,
                color=method_color(method, index),
                label=method,
                error_kw={"elinewidth": 1.2, "ecolor": "#333333"},
            )
        n = rows.groupby("segment")["n"].max().reindex(segments)
        labels = [f"{s}\n(n ≈ {v:.0f})" if np.isfinite(v) else s for s, v in zip(segments, n, strict=True)]
        ax.set_xticks(x, labels)
        ax.set_title(f"applicants known to {partner}?")
        ax.grid(axis="x", visible=False)
    axes[0].set_ylabel("KS (mean over seeds, CI over seeds)")
    _bar_legend(axes[0], len(methods))
    return fig
