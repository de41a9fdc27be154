"""`fedrisk report DIR`: report.md, report.html and PNG figures from a results directory.

The report only reads what the runner wrote (run.json, results.json, metrics.csv, history.csv and the
first unit's scores) and never recomputes the contract's numbers, so the tables always match
results.json. The Markdown is the single source; the HTML is rendered from it with markdown-it-py
(already installed as a dependency of rich). Every file is written atomically.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedrisk.core.errors import FedriskError
from fedrisk.core.jsonio import atomic_write_bytes
from fedrisk.evaluation.uncertainty import summarize
from fedrisk.report import plots
from fedrisk.runner.units import finished_methods, load_outcome, unit_dir

METHOD_ORDER = ("siloed", "federated", "centralized")
FIGURE_FILES = (
    "ks_curves.png",
    "roc_curves.png",
    "uplift_sweep.png",
    "training_curves.png",
    "per_bank_ks.png",
    "privacy_utility.png",
    "coverage_ks.png",
)
_SEGMENT = re.compile(r"^test\[(covered|uncovered)_by_(.+)\]$")


def build_report(directory: Path) -> Path:
    """Write DIR/report.md, DIR/report.html and DIR/figures/*.png; return the report.md path."""
    directory = Path(directory)
    run, results = _load_json(directory)
    config = results.get("config") or run.get("config") or {}
    metrics = _read_csv(directory / "metrics.csv")
    history = _read_csv(directory / "history.csv")
    point = _head_point(directory, results)
    methods = _ordered(results.get("methods", {}))
    name = str(results.get("name") or config.get("name") or directory.name)
    caption = f"{name} · seeds {_seeds_text(results.get('seeds', []))}"

    coverage = coverage_table(metrics, point, _ci_level(config))
    figures = _draw_figures(directory, results, coverage, history, point, methods, caption)
    markdown = render_markdown(run, results, config, metrics, coverage, figures, point, methods)
    atomic_write_bytes(directory / "report.md", markdown.encode("utf-8"))
    atomic_write_bytes(
        directory / "report.html", render_html(markdown, f"fedrisk report — {name}").encode("utf-8")
    )
    return directory / "report.md"


# ---------------------------------------------------------------------------------------------------------
# Reading the results directory


def _load_json(directory: Path) -> tuple[dict, dict]:
    fix = f"run `fedrisk run CONFIG --out {directory}` first (the same command resumes an interrupted run)"
    if not directory.is_dir():
        raise FedriskError(str(directory), "is not a directory", fix)
    loaded = []
    for file in ("run.json", "results.json"):
        path = directory / file
        if not path.exists():
            raise FedriskError(
                str(directory), f"has no {file}, so it is not a finished fedrisk results directory", fix
            )
        try:
            loaded.append(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FedriskError(
                str(path), f"is not valid JSON ({exc})", "re-run `fedrisk run` with --force"
            ) from None
    run, results = loaded
    if not isinstance(results.get("methods"), dict):
        raise FedriskError(
            str(directory / "results.json"), "has no 'methods' block", "re-run `fedrisk run` with --force"
        )
    return run, results


def _read_csv(path: Path) -> pd.DataFrame:
    """The CSV, or an empty frame when it is missing or has no rows (e.g. no method logged history)."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def _head_point(directory: Path, results: Mapping) -> str:
    """The sweep point the headline numbers come from (the first one; "base" without a sweep)."""
    sweep = results.get("sweep") or []
    if sweep and sweep[0].get("point"):
        return str(sweep[0]["point"])
    if (directory / "units" / "base").exists() or not (directory / "units").exists():
        return "base"
    return sorted(p.name for p in (directory / "units").iterdir() if p.is_dir())[0]


def _ordered(methods: Sequence[str] | Mapping[str, Any]) -> list[str]:
    names = list(methods)
    return [m for m in METHOD_ORDER if m in names] + [m for m in names if m not in METHOD_ORDER]


def _ci_level(config: Mapping) -> float:
    return float((config.get("evaluation") or {}).get("ci_level", 0.95))


def headline_scores(
    directory: Path, point: str, seeds: Sequence[int]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int | None, list[str]]:
    """Each method's (y, p) on the label holders' test sets for the first seed that has any method.

    Horizontal runs pool every bank's test set. Returns the scores, the seed used and the parties pooled.
    """
    for seed in seeds:
        unit = unit_dir(directory, point, seed)
        done = finished_methods(unit)
        if not done:
            continue
        scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        parties: list[str] = []
        for method in _ordered(sorted(done)):
            outcome = load_outcome(unit, method)
            keys = sorted(k for k in outcome.scores if k.split == "test")
            if not keys:
                continue
            parties = [k.party for k in keys]
            y = np.concatenate([outcome.scores[k].y for k in keys])
            p = np.concatenate([outcome.scores[k].p for k in keys])
            scored[method] = (y, p)
        return scored, seed, parties
    return {}, None, []


def coverage_table(metrics: pd.DataFrame, point: str, level: float) -> pd.DataFrame:
    """KS on the test applicants each partner covers / does not cover, per method, over seeds.

    Columns: partner, segment, method, ks, ks_lo, ks_hi, n, bad_rate (means per seed). metrics.csv has
    one row per seed, so the CI is a t-interval over seeds, clipped to KS's range [0, 1] (with few seeds
    the raw interval can run far outside it).
    """
    columns = ["partner", "segment", "method", "ks", "ks_lo", "ks_hi", "n", "bad_rate"]
    if metrics.empty or not {"split", "method", "ks"} <= set(metrics.columns):
        return pd.DataFrame(columns=columns)
    rows = metrics[metrics["point"].astype(str) == point] if "point" in metrics else metrics
    parsed = rows["split"].astype(str).str.extract(_SEGMENT)
    rows = rows.assign(segment=parsed[0], partner=parsed[1]).dropna(subset=["segment"])
    out = []
    for (partner, segment, method), group in rows.groupby(["partner", "segment", "method"], sort=False):
        ks = summarize(group["ks"].to_numpy(dtype=float), None, level)
        out.append(
            {
                "partner": partner,
                "segment": segment,
                "method": method,
                "ks": ks["mean"],
                "ks_lo": None if ks["ci"][0] is None else max(0.0, ks["ci"][0]),
                "ks_hi": None if ks["ci"][1] is None else min(1.0, ks["ci"][1]),
                "n": float(group["n"].mean()) if "n" in group else np.nan,
                "bad_rate": float(group["bad_rate"].mean()) if "bad_rate" in group else np.nan,
            }
        )
    return pd.DataFrame(out, columns=columns).sort_values(
        ["partner", "segment"], kind="stable", ignore_index=True
    )


def epsilon_key(results: Mapping) -> str | None:
    """The swept key that sets the privacy budget, if any (e.g. federation.horizontal.dp.target_epsilon)."""
    sweep = results.get("sweep") or []
    keys = sweep[0].get("assignment", {}) if sweep else {}
    return next((k for k in keys if "epsilon" in k.lower()), None)


# ---------------------------------------------------------------------------------------------------------
# Figures


FIGURE_NOTES = {
    "ks_curves.png": (
        "KS curves",
        "Cumulative share of bad and good applicants as the cut-off moves down the score; the black bar is KS, "
        "the widest gap between the two.",
    ),
    "roc_curves.png": (
        "ROC curves",
        "The same applicants scored by every method; higher and further left is better.",
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
        "Loss per epoch (baselines) or per federated round, mean over seeds with a ±1 sd band.",
    ),
    "per_bank_ks.png": (
        "KS per bank",
        "Each bank's own test set, smallest bank first, with CI whiskers: small banks are where federation "
        "should help most.",
    ),
    "coverage_ks.png": (
        "KS by partner coverage",
        "Test applicants the partner knows vs does not know: federation can only help where a partner has data.",
    ),
}


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def _draw_figures(
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
    figures = {
        "ks_curves.png": lambda: plots.ks_curves(scored, unit_caption, subject),
        "roc_curves.png": lambda: plots.roc_curves(scored, unit_caption, subject),
        "uplift_sweep.png": lambda: plots.uplift_vs_sweep(sweep, caption) if sweep else None,
        "privacy_utility.png": lambda: plots.privacy_utility(sweep, eps, caption) if eps else None,
        "training_curves.png": lambda: plots.training_curves(history, f"{caption} · point {point}"),
        "per_bank_ks.png": lambda: (
            plots.per_bank_bars(results.get("parties") or {}, methods, f"{caption} · point {point}")
            if topology == "horizontal"
            else None
        ),
        "coverage_ks.png": lambda: (
            plots.coverage_ks(coverage, methods, f"{caption} · point {point}")
            if topology == "vertical"
            else None
        ),
    }
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


# ---------------------------------------------------------------------------------------------------------
# Formatting


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
    if epsilon is None or plots.is_no_dp(epsilon):
        return "∞ (no DP)"
    return f"{epsilon:.2f}" + (f" (δ = {delta:.0e})" if delta is not None else "")


def _seeds_text(seeds: Sequence[int]) -> str:
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


# ---------------------------------------------------------------------------------------------------------
# The Markdown report


def render_markdown(
    run: Mapping,
    results: Mapping,
    config: Mapping,
    metrics: pd.DataFrame,
    coverage: pd.DataFrame,
    figures: Sequence[str],
    point: str,
    methods: Sequence[str],
) -> str:
    name = results.get("name") or config.get("name") or "experiment"
    topology = results.get("topology", "?")
    parts = [f"# fedrisk report — {name}"]
    if not results.get("complete", False):
        missing = [m for m in METHOD_ORDER if m not in methods]
        parts.append(
            "> **⚠ INCOMPLETE RUN.** results.json says `complete = false`: at least one method or seed did not "
            "finish, so the numbers below cover only what finished and may change"
            + (f" (no results at all for: {', '.join(missing)})" if missing else "")
            + ". Run the same `fedrisk run` command again to resume, then rebuild this report."
        )
    parts.append(_what_was_run(run, results, config, metrics, point, methods))
    parts.append(_headline(results, config, methods, point))
    parts.append(_cost(results))
    if topology == "horizontal" and results.get("parties"):
        parts.append(_per_bank(results["parties"], methods))
    if results.get("sweep"):
        parts.append(_sweep(results["sweep"], methods))
    if topology == "vertical" and not coverage.empty:
        parts.append(_coverage(coverage, methods))
    if results.get("audits") and not results.get("sweep"):
        parts.append(_audits(results["audits"]))
    if figures:
        parts.append(_figures(figures))
    parts.append(_how_to_read(results, topology))
    return "\n\n".join(parts) + "\n"


def _what_was_run(
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
    n_test = _test_size(metrics, point)
    if n_test is not None:
        lines.append(f"- **Test applicants per seed:** {n_test:,.0f}")
    sweep = config.get("sweep") or {}
    if sweep:
        grid = "; ".join(f"`{k}` ∈ {{{', '.join(str(v) for v in values)}}}" for k, values in sweep.items())
        lines.append(f"- **Sweep:** {grid} — headline numbers are for the first point, `{point}`")
    lines.append(
        f"- **Finished:** {results.get('finished', '?')} · fedrisk {results.get('fedrisk_version', '?')}"
        f" · config fingerprint `{run.get('fingerprint', '?')}` (full resolved config in run.json)"
    )
    return "## What was run\n\n" + "\n".join(lines)


def _test_size(metrics: pd.DataFrame, point: str) -> float | None:
    needed = {"point", "split", "seed", "method", "n"}
    if metrics.empty or not needed <= set(metrics.columns):
        return None
    rows = metrics[(metrics["point"].astype(str) == point) & (metrics["split"] == "test")]
    if rows.empty:
        return None
    first = rows["method"].iloc[0]
    return float(rows[rows["method"] == first].groupby("seed")["n"].sum().mean())


def _headline(results: Mapping, config: Mapping, methods: Sequence[str], point: str) -> str:
    block = results.get("methods", {})
    level = _ci_level(config)
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
    text = [
        "## Headline results",
        f"Mean over seeds on the label holders' test applicants [{level:.0%} CI]"
        + (f", sweep point `{point}`." if results.get("sweep") else "."),
        main,
    ]
    uplift = results.get("uplift") or {}
    if uplift:
        text.append("**Uplift of federated over siloed**")
        text.append(
            md_table(
                ["Measure", "Mean [CI]", "Definition"],
                [
                    ["KS relative", fmt_pct_ci(uplift.get("ks_relative")), "KS(federated) / KS(siloed) − 1"],
                    ["KS points", fmt_ci(uplift.get("ks_points")), "KS(federated) − KS(siloed)"],
                    ["AUC points", fmt_ci(uplift.get("auc_points")), "AUC(federated) − AUC(siloed)"],
                    *_business_rows(uplift),
                ],
                "lrl",
            )
        )
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
            f"extra approvals by the federated model at the siloed model's bad rate (from {rate:.0%})",
        ],
    ]


def _audits(audits: Mapping[str, Mapping]) -> str:
    """Each audit's numbers for the first seed (every seed's full result is in results.json)."""
    parts = ["## Audits", "Privacy, robustness and fairness measured beside the uplift (first seed shown)."]
    for name, per_seed in audits.items():
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


def _cost(results: Mapping) -> str:
    cost = results.get("cost") or {}
    rows = [
        ["Compute time, all methods and seeds", human_seconds(cost.get("wall_seconds"))],
        ["Federated training, per run (mean over seeds)", human_seconds(cost.get("federated_wall_seconds"))],
        ["Whole session, wall clock", human_seconds(cost.get("session_wall_seconds"))],
        ["Bytes sent, per federated run", human_bytes(cost.get("bytes_sent"))],
        ["Privacy budget ε", fmt_epsilon(cost.get("epsilon"), cost.get("delta"))],
    ]
    note = " (first sweep point; see the sweep table for the others)" if results.get("sweep") else ""
    return f"## Cost{note}\n\n" + md_table(["Item", "Value"], rows)


def _method_cells(block: Mapping, methods: Sequence[str]) -> list[str]:
    return [fmt_ci(plots.dig(block, "methods", m, "ks")) for m in methods]


def _per_bank(parties: Mapping[str, Mapping], methods: Sequence[str]) -> str:
    banks = plots.banks_by_size(parties)
    rows = [
        [
            bank,
            f"{parties[bank].get('n_test', 0):,}",
            *_method_cells(parties[bank], methods),
            fmt_pct_ci(plots.dig(parties[bank], "uplift", "ks_relative")),
        ]
        for bank in banks
    ]
    headers = ["Bank", "Test applicants", *[f"KS {m}" for m in methods], "KS uplift (relative)"]
    return (
        "## Per bank\n\nEach bank's own test applicants, smallest bank first; siloed = that bank's own model.\n\n"
        + md_table(headers, rows)
    )


def _sweep(sweep: Sequence[Mapping], methods: Sequence[str]) -> str:
    keys = list(sweep[0].get("assignment", {}))
    with_dp = any(plots.dig(entry, "cost", "epsilon") is not None for entry in sweep)
    rows = []
    for entry in sweep:
        row = [str(entry.get("assignment", {}).get(k)) for k in keys]
        row += [*_method_cells(entry, methods), fmt_pct_ci(plots.dig(entry, "uplift", "ks_relative"))]
        if with_dp:
            row.append(fmt_epsilon(plots.dig(entry, "cost", "epsilon"), plots.dig(entry, "cost", "delta")))
        rows.append(row)
    headers = [*(f"`{k}`" for k in keys), *[f"KS {m}" for m in methods], "KS uplift (relative)"]
    headers += ["ε"] if with_dp else []
    return "## Sweep\n\nOne row per sweep point, mean [CI] over seeds.\n\n" + md_table(
        headers, rows, "l" * len(keys) + "r" * (len(headers) - len(keys))
    )


def _coverage(coverage: pd.DataFrame, methods: Sequence[str]) -> str:
    rows = []
    for (partner, segment), group in coverage.groupby(["partner", "segment"], sort=False):
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
        n = group["n"].max()
        rate = group["bad_rate"].mean()
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
        "Test applicants split by whether each partner knows them (mean over seeds [t-interval over seeds, clipped to [0, 1]]). "
        "For uncovered applicants the federated model has only the bank's own features to go on.\n\n"
        + md_table(headers, rows, "ll" + "r" * (len(headers) - 2))
    )


def _figures(figures: Sequence[str]) -> str:
    parts = ["## Figures"]
    for file in figures:
        title, note = FIGURE_NOTES[file]
        parts.append(f"### {title}\n\n{note}\n\n![{title}](figures/{file})")
    return "\n\n".join(parts)


def _how_to_read(results: Mapping, topology: str) -> str:
    siloed = (
        "each bank's own model on its own test applicants, averaged over banks"
        if topology == "horizontal"
        else "the bank's model trained on its own features only"
    )
    return (
        "## How to read this\n\n"
        "**KS** (Kolmogorov–Smirnov) is the largest gap, over all score cut-offs, between the share of bad "
        "borrowers and the share of good borrowers that a cut-off would decline; 0 means no separation, 1 perfect. "
        "**AUC** is the probability that a random bad scores riskier than a random good, and **Gini** = 2·AUC − 1. "
        f"**Siloed** is {siloed}; **federated** trains across the parties without pooling their rows; "
        "**centralized** pools all data in one place and is the upper bound federation aims for. "
        "**KS uplift (relative)** = KS(federated) / KS(siloed) − 1; KS points is the plain difference. "
        "Every method is scored on the same held-out applicants. Confidence intervals are a hierarchical "
        "bootstrap: resample seeds (new world, split and training), then the test applicants within each seed, "
        "so they cover both training randomness and the finite test set; an interval that excludes 0 for the "
        "uplift means federation helps beyond noise. Figures of score curves show one seed of the first sweep "
        "point; tables average over all seeds."
    )


# ---------------------------------------------------------------------------------------------------------
# HTML


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
blockquote { border-left: 6px solid #c0392b; background: #fdecea; margin: 1em 0; padding: 0.6em 1em; }
img { max-width: 100%; border: 1px solid #ddd; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def render_html(markdown: str, title: str) -> str:
    """The same report as a standalone HTML page (images stay relative links next to it)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
