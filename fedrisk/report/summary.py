"""The report's first page, for a risk committee reading for one minute.

The question, the answer (the uplift with its interval, in words), what it costs (time, bytes, privacy)
and what could make the number wrong (validity caveats that apply to this run, each one sentence).
Everything is read from results.json / metrics.csv; nothing is recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from fedrisk.report.fmt import (
    fmt_ci,
    fmt_epsilon,
    fmt_pct_ci,
    human_bytes,
    human_seconds,
    protection_sentence,
)
from fedrisk.report.reading import ci_level, holdout_counts
from fedrisk.report.style import dig

MIN_DEFAULTS = 100  # below this many test defaults per seed a KS moves by several points between seeds
MIN_SEEDS = 5


def first_page(
    results: Mapping, config: Mapping, metrics: pd.DataFrame, coverage: pd.DataFrame, point: str
) -> str:
    """Markdown: ## The question, ## The answer, ## What it costs, ## What could make this number wrong."""
    return "\n\n".join(
        [
            "## The question\n\n" + question(results, config, coverage),
            "## The answer\n\n" + answer(results, config, point),
            "## What it costs\n\n" + costs(results),
            "## What could make this number wrong\n\n"
            + "\n".join(f"- {c}" for c in caveats(results, config, metrics, coverage, point)),
        ]
    )


def _partners(config: Mapping, coverage: pd.DataFrame) -> list[str]:
    data = config.get("data") or {}
    if data.get("source") == "tables":
        return [p.get("name", "?") for p in data.get("parties", []) if not p.get("label")]
    if data.get("partners"):
        return list(data["partners"])
    return list(dict.fromkeys(coverage["partner"])) if not coverage.empty else []


def _and(names: Sequence[str]) -> str:
    names = [f"**{n}**" for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def question(results: Mapping, config: Mapping, coverage: pd.DataFrame) -> str:
    if results.get("topology") == "horizontal":
        n = len(results.get("parties") or {}) or (config.get("world") or {}).get("n_banks", "several")
        return (
            f"If {n} banks trained one default model together, without pooling their customers' data, how "
            "much better would each bank's model separate future defaulters from good payers (KS) than the "
            "model it can build alone?"
        )
    partners = _partners(config, coverage)
    with_whom = f"with {_and(partners)}" if partners else "with its data partners"
    return (
        f"If the bank trained its SME default model together {with_whom}, without anyone handing over raw "
        "data, how much better would it separate future defaulters from good payers (KS) than on its own "
        "data alone?"
    )


def answer(results: Mapping, config: Mapping, point: str = "base") -> str:
    uplift = results.get("uplift") or {}
    rel, points = uplift.get("ks_relative"), uplift.get("ks_points")
    ks = {m: dig(results, "methods", m, "ks", "mean") for m in ("siloed", "federated", "centralized")}
    if not rel or rel.get("mean") is None or ks["siloed"] is None or ks["federated"] is None:
        return "_No answer yet: it needs both the federated and the siloed method to have finished._"
    lo, hi = (points or {}).get("ci") or rel.get("ci") or (None, None)
    seeds = len(results.get("seeds", []))
    interval = f"{ci_level(config):.0%} interval over {seeds} seed{'s' if seeds != 1 else ''}"
    if lo is not None and lo > 0:
        verdict = "Yes"
    elif hi is not None and hi < 0:
        verdict = "No — federation makes the model worse"
    else:
        verdict = "Not clearly — the interval includes no gain"
    lines = [
        f"**{verdict}: KS goes from {ks['siloed']:.3f} (bank alone) to {ks['federated']:.3f} federated, "
        f"{fmt_pct_ci(rel)} ({fmt_ci(points)} KS points; {interval}).**"
    ]
    if ks["centralized"] is not None:
        gap, gain = ks["centralized"] - ks["siloed"], ks["federated"] - ks["siloed"]
        share = (
            f": federation recovers {gain / gap:.0%} of the pooled gain" if gap > 0.005 and gain > 0 else ""
        )
        lines.append(
            f"Pooling every row in one place — the upper bound nobody may build — reaches KS "
            f"{ks['centralized']:.3f}{share}."
        )
    npl, more, rate = (
        uplift.get("npl_points_at_approval"),
        uplift.get("approval_gain_at_bad_rate"),
        uplift.get("approval_rate"),
    )
    if verdict == "Yes" and rate is not None and npl and npl.get("mean") is not None:
        lines.append(
            f"In lending terms, approving {rate:.0%} of applicants: the bad rate among approved falls by "
            f"{fmt_ci(npl, 2)} percentage points, or {fmt_pct_ci(more)} more applicants can be approved at "
            "the bank-alone bad rate."
        )
    if results.get("label_protection"):  # an uplift is only "invisible" data if the labels stayed hidden
        sentence = protection_sentence(results["label_protection"])
        lines.append(f"{sentence[0].upper()}{sentence[1:]}.")
    if results.get("sweep"):
        lines.append(
            f"(These are the first sweep point's numbers, `{point}`; the sweep table has every point.)"
        )
    return " ".join(lines)


def costs(results: Mapping) -> str:
    cost = results.get("cost") or {}
    eps = cost.get("epsilon")
    if eps is None:
        privacy = (
            "no differential privacy (ε = ∞): raw rows never leave their holder, but the model messages "
            "that do (embeddings, gradients, updates) carry information about them — see the audits"
        )
    else:
        privacy = f"differential privacy with ε = {fmt_epsilon(eps, cost.get('delta'))}"
    rows = [
        f"- **Time:** {human_seconds(cost.get('federated_wall_seconds'))} per federated training run; the "
        f"whole experiment took {human_seconds(cost.get('session_wall_seconds'))} of wall clock "
        f"({human_seconds(cost.get('wall_seconds'))} of compute over all methods and seeds).",
        f"- **Network:** {human_bytes(cost.get('bytes_sent'))} sent per federated run.",
        f"- **Privacy:** {privacy}.",
    ]
    return "\n".join(rows)


def caveats(
    results: Mapping, config: Mapping, metrics: pd.DataFrame, coverage: pd.DataFrame, point: str
) -> list[str]:
    """The validity caveats that apply to this run, most serious first."""
    out = []
    if not results.get("complete", False):
        out.append(
            "**The run is incomplete**: some methods or seeds did not finish, so these numbers may move."
        )
    for method, block in (results.get("methods") or {}).items():
        for flag in block.get("flags") or []:
            out.append(f"**{method} is flagged `{flag}`**: check it before reading its numbers.")
    data = config.get("data") or {}
    if data.get("source") != "tables":
        out.append(
            "**Synthetic data**: the gain is what fedrisk's generated economy builds in "
            "(docs/synthetic_world.md), not evidence about your partners' data; run it on real tables for that."
        )
    seeds = len(results.get("seeds", []))
    if seeds < MIN_SEEDS:
        out.append(
            f"**Few repetitions**: {seeds} seed{'s' if seeds != 1 else ''}; intervals rest on little data."
        )
    counts = holdout_counts(metrics, point)
    if counts is not None and math.isfinite(counts[1]) and counts[1] < MIN_DEFAULTS:
        out.append(
            f"**Few defaults**: about {counts[1]:.0f} defaulters per seed in the test set; a KS on so few "
            "moves by several points between samples."
        )
    lo = dig(results, "uplift", "ks_points", "ci")
    if lo and lo[0] is not None and lo[0] <= 0:
        out.append("**The gain is not distinguishable from noise**: its interval includes zero.")
    fed = dig(results, "methods", "federated", "ks", "mean")
    cen_hi = (dig(results, "methods", "centralized", "ks", "ci") or [None, None])[1]
    if fed is not None and cen_hi is not None and fed > cen_hi:
        out.append(
            "**Federated beats the pooled model**, which should be its upper bound: the methods may not "
            "be tuned alike."
        )
    out += _coverage_caveat(coverage, metrics, point)
    if not metrics.empty and "split" in metrics and not (metrics["split"].astype(str) == "oot").any():
        out.append(
            "**In-time test only**: the test applicants come from the same period as the training data; "
            "on later applicants (out of time) models usually score lower."
        )
    backend = (config.get("federation") or {}).get("backend", "inprocess")
    out.append(
        f"**Simulated on one machine** (backend `{backend}`): times and bytes leave out network latency and "
        "the partners' own infrastructure."
    )
    return out


def _coverage_caveat(coverage: pd.DataFrame, metrics: pd.DataFrame, point: str) -> list[str]:
    counts = holdout_counts(metrics, point)
    if coverage.empty or counts is None or not counts[0]:
        return []
    covered = coverage[coverage["segment"] == "covered"].groupby("partner")["n"].max()
    shares = [f"{partner} {n / counts[0]:.0%}" for partner, n in covered.items()]
    return [
        f"**Partner coverage**: the partners know these shares of the test applicants — {', '.join(shares)}; "
        "the gain comes from those applicants, so lower coverage in practice means a smaller gain."
    ]
