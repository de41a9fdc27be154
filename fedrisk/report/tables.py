"""The report's detail sections (after the first page): what was run, every metric, cost, sweep, segments."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from fedrisk.report.fmt import (
    fmt_ci,
    fmt_epsilon,
    fmt_pct_ci,
    human_bytes,
    human_seconds,
    md_table,
    protection_sentence,
)
from fedrisk.report.reading import ci_level, holdout_counts
from fedrisk.report.style import dig


def what_was_run(
    run: Mapping, results: Mapping, config: Mapping, metrics: pd.DataFrame, point: str, methods: Sequence[str]
) -> str:
    data = config.get("data") or {}
    world = config.get("world") or {}
    if data.get("source") == "tables":
        source = "real tables: " + ", ".join(f"`{p.get('name')}`" for p in data.get("parties", []))
    else:
        banks = world.get("n_banks", 1)
        source = (
            f"synthetic world of {world.get('n_firms', '?'):,} firms, {banks} bank{'s' if banks != 1 else ''}"
        )
    seeds = results.get("seeds", [])
    model = config.get("model") or {}
    model_text = str(model.get("kind", "?")) + (
        f" {tuple(model.get('hidden', ()))}" if model.get("kind") == "mlp" else ""
    )
    lines = [
        f"- **Topology:** {results.get('topology', '?')}",
        f"- **Config name:** `{results.get('name') or config.get('name')}`",
        f"- **Seeds:** {', '.join(str(s) for s in seeds)} ({len(seeds)} seeds)",
        f"- **Federation backend:** {(config.get('federation') or {}).get('backend', '?')}",
        f"- **Data:** {source}",
        f"- **Model:** {model_text}",
        f"- **Methods:** {', '.join(methods) if methods else 'none finished'}",
    ]
    counts = holdout_counts(metrics, point)
    if counts is not None:
        bads = f", about {counts[1]:,.0f} of them defaulters" if math.isfinite(counts[1]) else ""
        lines.append(f"- **Test applicants per seed:** {counts[0]:,.0f}{bads}")
    partners = (results.get("data") or {}).get("partners") or {}
    if partners:  # a poor join (wrong id column or format) shows here before it shows in the uplift
        holder = results["data"].get("label_holder", "the label holder")
        rates = ", ".join(
            f"{name} {p['match_rate']:.1%} ({p['matched']:,.0f} firms)" for name, p in partners.items()
        )
        lines.append(f"- **Match rate** (share of {holder}'s firms each partner holds): {rates}")
    sweep = config.get("sweep") or {}
    if sweep:
        grid = "; ".join(f"`{k}` ∈ {{{', '.join(str(v) for v in values)}}}" for k, values in sweep.items())
        lines.append(f"- **Sweep:** {grid} — headline numbers are for the first point, `{point}`")
    lines.append(
        f"- **Finished:** {results.get('finished', '?')} · fedrisk {results.get('fedrisk_version', '?')}"
        f" · config fingerprint `{run.get('fingerprint', '?')}` (full resolved config in run.json)"
    )
    return "## What was run\n\n" + "\n".join(lines)


def headline(results: Mapping, config: Mapping, methods: Sequence[str], point: str) -> str:
    block = results.get("methods", {})
    level = ci_level(config)
    main = md_table(
        ["Method", "KS", "AUC", "Gini"],
        [
            [m, fmt_ci(block[m].get("ks")), fmt_ci(block[m].get("auc")), fmt_ci(block[m].get("gini"))]
            for m in methods
        ],
    )
    approval = (config.get("evaluation") or {}).get("approval_rate", 0.8)
    other = md_table(
        ["Method", "Brier score", f"Bad rate at {approval:.0%} approval", "Lift, riskiest decile"],
        [
            [
                m,
                fmt_ci(block[m].get("brier"), 4),
                fmt_ci(block[m].get("bad_rate_at_approval"), 4),
                fmt_ci(block[m].get("lift_top_decile"), 2),
            ]
            for m in methods
        ],
    )
    method_note = f" Intervals: {results['ci_method']}." if results.get("ci_method") else ""
    text = [
        "## Headline results",
        f"Mean over seeds on the label holders' test applicants [{level:.0%} CI]"
        + (f", sweep point `{point}`." if results.get("sweep") else ".")
        + method_note,
        main,
    ]
    backwards = [m for m in methods if "auc_below_0.5" in (block[m].get("flags") or [])]
    if backwards:
        text.append(
            f"> **Warning:** {', '.join(backwards)} {'has' if len(backwards) == 1 else 'have'} AUC below 0.5: "
            "the model ranks applicants backwards (worse than chance). Check the training settings "
            "(e.g. `training.lr`, `training.weight_decay`) before reading any uplift."
        )
    uplift = results.get("uplift") or {}
    if uplift:
        text.append("**Uplift of federated over siloed**")
        rows = [
            ["KS relative", fmt_pct_ci(uplift.get("ks_relative")), "KS(federated) / KS(siloed) − 1"],
            ["KS points", fmt_ci(uplift.get("ks_points")), "KS(federated) − KS(siloed)"],
            ["AUC points", fmt_ci(uplift.get("auc_points")), "AUC(federated) − AUC(siloed)"],
            *_business_rows(uplift),
        ]
        text.append(md_table(["Measure", "Mean [CI]", "Definition"], rows, "lrl"))
        if results.get("label_protection"):
            sentence = protection_sentence(results["label_protection"])
            text.append(f"**{sentence[0].upper()}{sentence[1:]}**")
    else:
        text.append("_No uplift: it needs both the federated and the siloed method to have finished._")
    text.append("**Other credit metrics** (mean over seeds [t-interval over seeds])")
    text.append(other)
    return "\n\n".join(text)


def _business_rows(uplift: Mapping) -> list[list[str]]:
    """What a lender feels: NPL cut at the same approval rate, approvals gained at the same bad rate."""
    rate = uplift.get("approval_rate")
    if rate is None or "npl_points_at_approval" not in uplift:
        return []
    return [
        [
            "NPL cut (pp)",
            fmt_ci(uplift.get("npl_points_at_approval"), 2),
            f"bad rate among approved, siloed − federated, both approving {rate:.0%}",
        ],
        [
            "Approval gain",
            fmt_pct_ci(uplift.get("approval_gain_at_bad_rate")),
            f"extra approvals by the federated model at the siloed model's bad rate (from {rate:.0%}); "
            "both cut-offs chosen on validation applicants"
            + _bad_rates_text(uplift.get("approval_bad_rate") or {}),
        ],
    ]


def _bad_rates_text(rates: Mapping) -> str:
    """The test bad rates the two validation cut-offs gave (did the federated cut hold the siloed rate?)."""
    silo, fed = (rates.get(m) or {} for m in ("siloed", "federated"))
    if silo.get("mean") is None or fed.get("mean") is None:
        return ""
    return f"; test bad rate {100 * silo['mean']:.2f}% siloed vs {100 * fed['mean']:.2f}% federated"


def cost(results: Mapping) -> str:
    block = results.get("cost") or {}
    rows = [
        ["Whole session, wall clock", human_seconds(block.get("session_wall_seconds"))],
        ["Compute time, all methods and seeds", human_seconds(block.get("wall_seconds"))],
        ["Federated training, per run (mean over seeds)", human_seconds(block.get("federated_wall_seconds"))],
        ["Bytes sent, per federated run", human_bytes(block.get("bytes_sent"))],
        ["Privacy budget ε", fmt_epsilon(block.get("epsilon"), block.get("delta"))],
    ]
    note = " (first sweep point; see the sweep table for the others)" if results.get("sweep") else ""
    return f"## Cost{note}\n\n" + md_table(["Item", "Value"], rows)


def _method_cells(block: Mapping, methods: Sequence[str]) -> list[str]:
    return [fmt_ci(dig(block, "methods", m, "ks")) for m in methods]


def sweep(entries: Sequence[Mapping], methods: Sequence[str]) -> str:
    keys = list(entries[0].get("assignment", {}))
    with_dp = any(dig(entry, "cost", "epsilon") is not None for entry in entries)
    rows = []
    for entry in entries:
        row = [str(entry.get("assignment", {}).get(k)) for k in keys]
        row += [*_method_cells(entry, methods), fmt_pct_ci(dig(entry, "uplift", "ks_relative"))]
        if with_dp:
            row.append(fmt_epsilon(dig(entry, "cost", "epsilon"), dig(entry, "cost", "delta")))
        rows.append(row)
    headers = [*(f"`{k}`" for k in keys), *[f"KS {m}" for m in methods], "KS uplift (relative)"]
    headers += ["ε"] if with_dp else []
    return "## Sweep\n\nOne row per sweep point, mean [CI] over seeds.\n\n" + md_table(
        headers, rows, "l" * len(keys) + "r" * (len(headers) - len(keys))
    )


def coverage(table: pd.DataFrame, methods: Sequence[str]) -> str:
    rows = []
    for (partner, segment), group in table.groupby(["partner", "segment"], sort=False):
        by_method = group.set_index("method")
        cells = []
        for m in methods:
            if m in by_method.index and pd.notna(by_method.at[m, "ks"]):
                r = by_method.loc[m]
                cells.append(fmt_ci({"mean": r["ks"], "ci": [r["ks_lo"], r["ks_hi"]]}))
            else:
                cells.append("–")
        gain = "–"
        if {"federated", "siloed"} <= set(by_method.index):
            diff = by_method.at["federated", "ks"] - by_method.at["siloed", "ks"]
            gain = f"{diff:+.3f}" if pd.notna(diff) else "–"
        n, rate = group["n"].max(), group["bad_rate"].mean()
        rows.append(
            [
                partner,
                segment,
                f"{n:,.0f}" if pd.notna(n) else "–",
                f"{rate:.1%}" if pd.notna(rate) else "–",
                *cells,
                gain,
            ]
        )
    headers = [
        "Partner",
        "Segment",
        "Test applicants",
        "Bad rate",
        *[f"KS {m}" for m in methods],
        "KS fed − silo",
    ]
    return (
        "## KS by partner coverage\n\n"
        "Test applicants split by whether each partner knows them (mean over seeds [t-interval over seeds, "
        "clipped to [0, 1]]). For uncovered applicants the federated model has only the bank's own features "
        "to go on.\n\n" + md_table(headers, rows, "ll" + "r" * (len(headers) - 2))
    )


def audits(blocks: Mapping[str, Mapping]) -> str:
    """Each audit's numbers for the first seed (every seed's full result is in results.json)."""
    parts = ["## Audits", "Privacy, robustness and fairness measured beside the uplift (first seed shown)."]
    for name, per_seed in blocks.items():
        if not per_seed:
            continue
        seed, result = next(iter(per_seed.items()))
        rows = [[path, _fmt_leaf(value)] for path, value in _leaves(result)][:60]
        parts.append(f"### {name.replace('_', ' ')} ({seed})")
        parts.append(md_table(["measure", "value"], rows, "lr") if rows else "_no numbers_")
    return "\n\n".join(parts)


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, Mapping):
        out: list[tuple[str, Any]] = []
        for key, value in node.items():
            out += _leaves(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(node, list) and node and all(isinstance(v, Mapping) for v in node):
        out = []
        for i, value in enumerate(node):
            out += _leaves(value, f"{prefix}[{i}]")
        return out
    return [(prefix, node)]


def _fmt_leaf(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_fmt_leaf(v) for v in value[:8]) + (" …" if len(value) > 8 else "")
    return str(value)


def how_to_read(topology: str) -> str:
    siloed = (
        "each bank's own model on its own test applicants, averaged over banks"
        if topology == "horizontal"
        else "the bank's model trained on its own features only"
    )
    return (
        "## How to read this\n\n"
        "**KS** (Kolmogorov–Smirnov) is the largest gap, over all score cut-offs, between the share of bad "
        "borrowers and the share of good borrowers that a cut-off would decline, reading higher scores as riskier "
        "(directional: a model that ranks backwards scores near 0, never high); 0 means no separation, 1 perfect. "
        "**AUC** is the probability that a random bad scores riskier than a random good, and **Gini** = 2·AUC − 1. "
        f"**Siloed** is {siloed}; **federated** trains across the parties without pooling their rows; "
        "**centralized** pools all data in one place and is the upper bound federation aims for. "
        "**KS uplift (relative)** = KS(federated) / KS(siloed) − 1; KS points is the plain difference. "
        "Every method is scored on the same held-out applicants. Confidence intervals are a hierarchical "
        "bootstrap: resample seeds (new world, split and training), then the test applicants within each seed, "
        "so they cover both training randomness and the finite test set. For KS, AUC and the uplift the resampled "
        "scores are kernel-smoothed and the interval is the basic (pivotal) one around the smoothed distributions' "
        "value: the empirical KS is a maximum and overstates the true KS on small test sets, and this interval "
        "corrects for it (its coverage, simulated, is in docs/statistics.md). An interval that excludes 0 for the "
        "uplift means federation helps beyond noise. Figures of score curves show one seed of the first sweep "
        "point; tables average over all seeds."
    )
