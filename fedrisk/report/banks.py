"""The per-bank section of a horizontal report: does federation pay for each bank, and for the small ones?

For every bank: KS on its own test applicants under each method (siloed = the bank alone), the KS gain of
federated and personalized over siloed with its interval, and a verdict (``pays`` when the interval is
above zero, ``costs`` when below, else ``unclear``); then the smallest banks' view and what
personalisation kept. The figure plots each bank's gain against its size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from fedrisk.evaluation.banks import UPLIFT_KEYS, verdict
from fedrisk.report.fmt import fmt_ci, md_table
from fedrisk.report.party_plots import banks_by_size
from fedrisk.report.style import dig, method_color, new_figure, styled

BANK_METHODS = ("siloed", "federated", "personalized", "centralized")
"""The methods the per-bank table compares."""


def _gain_methods(parties: Mapping[str, Mapping]) -> list[str]:
    return [m for m, key in UPLIFT_KEYS.items() if any(key in block for block in parties.values())]


def _pays(block: Mapping, gain_methods: Sequence[str]) -> str:
    """The best verdict any federated method earns for this bank, and which method loses, if one does."""
    found = dict(
        zip(
            gain_methods,
            [verdict(dig(block, UPLIFT_KEYS[m], "ks_points")) for m in gain_methods],
            strict=True,
        )
    )
    losing = [m for m, v in found.items() if v == "costs"]
    for answer in ("pays", "unclear", "costs"):
        chosen = [m for m, v in found.items() if v == answer]
        if chosen:
            text = {
                "pays": f"yes ({', '.join(chosen)})",
                "unclear": "unclear",
                "costs": f"no ({', '.join(chosen)} loses)",
            }[answer]
            if answer != "costs" and losing:
                text += f"; {', '.join(losing)} loses"
            return text
    return "–"


def section(results: Mapping, methods: Sequence[str]) -> str:
    """Markdown: the per-bank table, the smallest banks' view and the personalisation notes."""
    parties = results.get("parties") or {}
    gain_methods = _gain_methods(parties)
    methods = [m for m in methods if m in BANK_METHODS]  # the scikit-learn references stay in the headline
    rows = [
        [
            bank,
            f"{parties[bank].get('n_test', 0):,}",
            *[fmt_ci(dig(parties[bank], "methods", m, "ks")) for m in methods],
            *[fmt_ci(dig(parties[bank], UPLIFT_KEYS[m], "ks_points")) for m in gain_methods],
            _pays(parties[bank], gain_methods),
        ]
        for bank in banks_by_size(parties)
    ]
    headers = [
        "Bank",
        "Test applicants",
        *[f"KS {m}" for m in methods],
        *[f"{m} − siloed" for m in gain_methods],
        "Federation pays?",
    ]
    parts = [
        "## Per bank: does federation pay?",
        "Each bank's own test applicants, smallest bank first; siloed = the bank's own model. A gain whose "
        "interval lies above zero *pays*, below zero *loses*; otherwise it is *unclear* at this many seeds.",
        md_table(headers, rows),
    ]
    smallest = dig(results, "banks", "smallest") or {}
    if smallest.get("banks"):
        gains = "; ".join(
            f"{m} {fmt_ci(block)} KS points" for m, block in (smallest.get("ks_points") or {}).items()
        )
        parts.append(
            f"**The smallest banks' view.** {', '.join(smallest['banks'])} "
            f"({100 * smallest.get('share_of_test_applicants', 0):.0f}% of the test applicants): mean KS gain "
            f"over their own models {gains or '–'} (interval over seeds)."
        )
    if note := _personalization_note(results.get("personalization")):
        parts.append(note)
    return "\n\n".join(parts)


def _personalization_note(block: Mapping | None) -> str:
    if not block:
        return ""
    kept = block.get("kept") or {}
    lines = [
        f"**Personalisation ({block.get('mode')}).** Each bank keeps a personal model only where cross-validation "
        "on its own rows says it beats the global one (recalibrated = the global model with the bank's own "
        "calibration). Kept per bank over the seeds: "
        + "; ".join(
            f"{bank} {', '.join(f'{k} ×{n}' for k, n in sorted(c.items()))}" for bank, c in kept.items()
        )
        + "."
    ]
    fallbacks = block.get("fallbacks") or []
    if fallbacks:
        lines.append(
            "Kept the global model for lack of defaults: "
            + "; ".join(f"{f['bank']} (seed {f['seed']}: {f['reason']})" for f in fallbacks)
            + "."
        )
    return " ".join(lines)


@styled
def uplift_vs_size(parties: Mapping[str, Mapping], caption: str) -> Figure | None:
    """KS gain over the bank's own model against the bank's size (test applicants, log scale), per method."""
    gain_methods = _gain_methods(parties)
    banks = [b for b in banks_by_size(parties) if parties[b].get("n_test")]
    if not banks or not gain_methods:
        return None
    fig = new_figure(7.2, 4.6, caption, "KS gain over the bank's own model, by bank size")
    ax = fig.subplots()
    size = np.array([parties[b]["n_test"] for b in banks], dtype=float)
    for index, method in enumerate(gain_methods):
        blocks = [dig(parties[b], UPLIFT_KEYS[method], "ks_points") or {} for b in banks]
        mean = np.array([np.nan if b.get("mean") is None else b["mean"] for b in blocks], dtype=float)
        ci = [b.get("ci") or (None, None) for b in blocks]
        lo = np.array([np.nan if c[0] is None else c[0] for c in ci], dtype=float)
        hi = np.array([np.nan if c[1] is None else c[1] for c in ci], dtype=float)
        shift = 1.0 + 0.04 * (index - (len(gain_methods) - 1) / 2)  # side by side on the log axis
        color = method_color(method, index + 3)
        ax.errorbar(
            size * shift,
            mean,
            yerr=[np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)],
            fmt="o",
            color=color,
            ecolor=color,
            elinewidth=1.6,
            capsize=3,
            label=f"{method} − siloed [CI]",
        )
    ax.axhline(0, color="#444444", lw=1, ls="--")
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _pos: f"{v:,.0f}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("bank size: test applicants per seed (log scale)")
    ax.set_ylabel("KS gain on the bank's own applicants")
    ax.legend(frameon=False, loc="best")
    return fig
