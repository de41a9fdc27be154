"""How numbers read in the report: means with intervals, percentages, bytes, durations, pipe tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedrisk.report.style import is_no_dp


def fmt_ci(block: Mapping | None, digits: int = 3) -> str:
    """``0.412 [0.398, 0.431]``; an en dash when the value is missing."""
    if not block or block.get("mean") is None:
        return "–"
    lo, hi = block.get("ci") or (None, None)
    if lo is None or hi is None:
        return f"{block['mean']:.{digits}f}"
    return f"{block['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_pct_ci(block: Mapping | None) -> str:
    """A relative change as a signed percentage: ``+12.3% [+8.1%, +16.0%]``."""
    if not block or block.get("mean") is None:
        return "–"
    lo, hi = block.get("ci") or (None, None)
    text = f"{100 * block['mean']:+.1f}%"
    return text if lo is None or hi is None else f"{text} [{100 * lo:+.1f}%, {100 * hi:+.1f}%]"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d} min"


def fmt_epsilon(epsilon: float | None, delta: float | None) -> str:
    if epsilon is None or is_no_dp(epsilon):
        return "∞ (no DP)"
    return f"{epsilon:.2f}" + (f" (δ = {delta:.0e})" if delta is not None else "")


def seeds_text(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) <= 6:
        return "[" + ", ".join(str(s) for s in seeds) + "]"
    return f"[{seeds[0]}, {seeds[1]}, …, {seeds[-1]}] ({len(seeds)} seeds)"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A pipe table; ``align`` has one of l/r per column (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    marks = {"l": ":---", "r": "---:"}

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    lines.append("| " + " | ".join(marks[a] for a in align) + " |")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def protection_sentence(summary: dict) -> str:
    """One line for the summary and the report: the protection and what partners' attacks achieved."""
    worst = summary.get("worst_leak_auc", {})
    parts = [f"{worst[a]:.2f} {a.split('_')[0]}" for a in ("norm_auc", "direction_auc") if a in worst]
    return (
        f"label protection: {summary['protection']}; partners' attacks on their own messages: "
        f"AUC up to {', '.join(parts) or '-'} (0.5 = labels hidden; docs/protection.md)"
    )
