"""The report's curves: KS and ROC on the headline test set, the sweep, training history.

One function per figure, each returning a matplotlib ``Figure`` (or ``None`` when there is nothing to
draw). Every function takes the data it draws, not a results directory, plus a provenance caption.
Bars and dots per bank / per partner segment are in ``fedrisk.report.party_plots``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from fedrisk.report.style import (
    BAD_COLOR,
    GOOD_COLOR,
    METHOD_COLORS,
    OTHER_COLORS,
    dig,
    drawing_order,
    is_no_dp,
    is_number,
    method_color,
    method_label,
    method_line,
    new_figure,
    styled,
    zoom,
)

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
    return share, tpr, fpr, int(np.argmax(tpr - fpr))  # directional, as ks_statistic


def _two_classes(scored: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    return {m: yp for m, yp in scored.items() if len(np.unique(yp[0])) == 2}


@styled
def ks_curves(
    scored: Mapping[str, tuple[np.ndarray, np.ndarray]], caption: str, subject: str
) -> Figure | None:
    """One panel per method: cumulative share of bads and of goods as the cut-off moves down the scores.

    The vertical bar marks KS, the widest gap between the two curves — the cut-off at which the model
    separates bads from goods best.
    """
    scored = _two_classes(scored)
    if not scored:
        return None
    fig = new_figure(3.7 * len(scored) + 0.4, 4.2, caption, f"KS curves — {subject}")
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
        ax.set_xlabel("share declined (riskiest first)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.legend(handles=ax.lines[:2], labels=["bads caught", "goods declined"], loc="lower right")
    axes[0].set_ylabel("cumulative share")
    return fig


@styled
def roc_curves(
    scored: Mapping[str, tuple[np.ndarray, np.ndarray]], caption: str, subject: str
) -> Figure | None:
    """ROC curves of every method on the same applicants; AUC and KS in the legend.

    Federated is drawn last, dashed, over a wide pale centralized line: when the two coincide (lossless
    vertical logistic regression) both remain visible.
    """
    from fedrisk.core.metrics import credit_metrics

    scored = _two_classes(scored)
    if not scored:
        return None
    fig = new_figure(6.0, 5.8, caption, f"ROC curves — {subject}")
    ax = fig.subplots()
    index = {m: i for i, m in enumerate(scored)}
    for method in drawing_order(scored):
        y, p = scored[method]
        fpr, tpr, _ = roc_curve(np.asarray(y).astype(int), np.asarray(p, dtype=float))
        metrics = credit_metrics(y, p)
        ax.plot(
            fpr,
            tpr,
            color=method_color(method, index[method]),
            label=f"{method_label(method)}: AUC {metrics['auc']:.3f}, KS {metrics['ks']:.3f}",
            **method_line(method),
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


def _x_positions(values: Sequence[Any]) -> tuple[list[float], list[str] | None]:
    """Numeric sweep values plot as themselves; anything else as evenly spaced categories in sweep order."""
    if all(is_number(v) for v in values):
        return [float(v) for v in values], None
    categories = list(dict.fromkeys(str(v) for v in values))
    return [float(categories.index(str(v))) for v in values], categories


@styled
def uplift_vs_sweep(sweep: Sequence[Mapping], caption: str) -> Figure | None:
    """KS uplift (federated over siloed, relative) with its CI band against the first swept key.

    With more swept keys, one line per combination of the others.
    """
    if not sweep or not sweep[0].get("assignment"):
        return None
    x_key = next(iter(sweep[0]["assignment"]))
    all_x, categories = _x_positions([e["assignment"].get(x_key) for e in sweep])
    position = {id(e): x for e, x in zip(sweep, all_x, strict=True)}
    fig = new_figure(7.2, 4.6, caption, f"KS uplift of federated over siloed vs {x_key.split('.')[-1]}")
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
        color = OTHER_COLORS[index % len(OTHER_COLORS)] if label else METHOD_COLORS["federated"]
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


@styled
def privacy_utility(sweep: Sequence[Mapping], epsilon_key: str, caption: str) -> Figure | None:
    """Federated KS against the privacy budget ε (log scale); ε = ∞ (no DP) and siloed KS as reference lines."""
    groups = _sweep_series(sweep, epsilon_key)
    fig = new_figure(7.2, 4.6, caption, "Privacy–utility trade-off: federated KS vs privacy budget ε")
    ax = fig.subplots()
    drawn = 0
    for index, (label, points) in enumerate(groups.items()):
        color = METHOD_COLORS["federated"] if len(groups) == 1 else OTHER_COLORS[index % len(OTHER_COLORS)]
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
            elif is_number(value) and value > 0:
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


@styled
def training_curves(history: pd.DataFrame, caption: str) -> Figure | None:
    """Loss per epoch (baselines) or per round (federated): one panel per method, mean over seeds ± 1 sd.

    Rows of several parties in one seed (each bank's own model) are averaged first. The y-range is set by
    the curves after their first step: the first epoch's loss is often several times the rest and would
    flatten everything that matters (it is clipped, not dropped).
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
    fig = new_figure(3.8 * len(panels) + 0.4, 4.0, caption, "Training curves (mean over seeds, band = ±1 sd)")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for index, (ax, (method, rows, x_col, losses)) in enumerate(zip(axes, panels, strict=True)):
        color = method_color(method, index)
        shown: list[float] = []
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
            after_first = slice(1, None) if len(mean) >= 3 else slice(None)
            shown += list((mean - std).values[after_first]) + list((mean + std).values[after_first])
        zoom(ax, shown, floor=0.0)
        ax.set_title(method_label(method), color=color)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(x_col)
        ax.set_ylabel("log loss")
        ax.legend(frameon=False)
    return fig
