"""One look for every report figure: method colours and line styles, fonts, caption, axis zoom.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot), so drawing never touches the
user's backend or global figure list, and tests can inspect the returned axes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

METHOD_COLORS = {
    "siloed": "#E69F00",
    "federated": "#0072B2",
    "personalized": "#CC79A7",
    "centralized": "#009E73",
}
"""Okabe–Ito colours (colour-blind safe), the same method in the same colour in every figure."""
METHOD_LABELS = {
    "siloed": "siloed (bank alone)",
    "federated": "federated",
    "personalized": "personalized (federated + each bank's fine-tuning)",
    "centralized": "centralized (pooled data)",
}
METHOD_LINES = {
    "centralized": {"ls": "-", "lw": 4.0, "alpha": 0.55},
    "federated": {"ls": (0, (5, 2)), "lw": 2.0, "alpha": 1.0},
}
"""Federated often equals centralized (lossless vertical LR): centralized is a wide pale band, federated a
dashed line on top, so both stay visible when they coincide."""
BAD_COLOR, GOOD_COLOR = "#D55E00", "#0072B2"
OTHER_COLORS = ("#CC79A7", "#56B4E9", "#F0E442", "#000000", "#999999")
DPI = 110

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


def styled(func: Callable[..., Figure | None]) -> Callable[..., Figure | None]:
    """Apply the report style while the figure's artists are created (rcParams are read at creation)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Figure | None:
        with matplotlib.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper


def new_figure(width: float, height: float, caption: str, title: str) -> Figure:
    """A constrained-layout figure with a bold title on top and the provenance caption at the bottom.

    The caption names the config and seeds, so a PNG pasted into a committee pack still says where it
    came from.
    """
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.get_layout_engine().set(rect=(0, 0.045, 1, 0.955))
    fig.suptitle(title, fontweight="bold")
    fig.text(0.01, 0.008, caption, fontsize=8, color="#555555", ha="left", va="bottom")
    return fig


def method_color(method: str, index: int = 0) -> str:
    return METHOD_COLORS.get(method, OTHER_COLORS[index % len(OTHER_COLORS)])


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def method_line(method: str) -> dict[str, Any]:
    return dict(METHOD_LINES.get(method, {"ls": "-", "lw": 2.0, "alpha": 1.0}))


def drawing_order(methods: Iterable[str]) -> list[str]:
    """Federated last, so it is drawn on top of everything it may coincide with."""
    names = list(methods)
    return [m for m in names if m != "federated"] + [m for m in names if m == "federated"]


def zoom(ax: Any, values: Iterable[float], *, floor: float | None = None, ceil: float | None = None) -> None:
    """Y-axis from the data, padded by 8% of its range (not a fixed 0–1 that flattens differences)."""
    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if data.size == 0:
        return
    lo, hi = float(data.min()), float(data.max())
    pad = 0.08 * (hi - lo) if hi > lo else max(0.02, 0.1 * abs(hi))
    lo, hi = lo - pad, hi + pad
    ax.set_ylim(lo if floor is None else max(floor, lo), hi if ceil is None else min(ceil, hi))


def is_no_dp(value: Any) -> bool:
    """True for the sweep spellings of ε = ∞ (DP off): None, "inf", "infinity", "∞", float('inf')."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in ("inf", "infinity", "∞", "+inf")
    return isinstance(value, int | float) and math.isinf(value) and value > 0


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def dig(block: Mapping | None, *path: str) -> Any:
    """``block[path[0]][path[1]]...``, or None where a level is missing (incomplete runs lack blocks)."""
    for key in path:
        if not isinstance(block, Mapping):
            return None
        block = block.get(key)
    return block
