"""`fedrisk report DIR`: report.md, report.html and PNG figures from a results directory.

The report only reads what the runner wrote (run.json, results.json, metrics.csv, history.csv and the
first unit's scores) and never recomputes the contract's numbers. report.md is the single source (kept
for git); report.html is rendered from it with every figure inlined. Every file is written atomically.

Layout: the first page (``summary``: question, answer, cost, caveats), a rule, then the details
(``tables``), figures (``figures``) and how to read them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from fedrisk.core.jsonio import atomic_write_bytes
from fedrisk.report import banks, out_of_time, summary, tables
from fedrisk.report.figures import draw_figures, figures_section
from fedrisk.report.fmt import seeds_text
from fedrisk.report.html import render_html
from fedrisk.report.importance import trees_section
from fedrisk.report.reading import (
    METHOD_ORDER,
    ci_level,
    coverage_table,
    head_point,
    load_run,
    ordered,
    read_csv,
)


def build_report(directory: Path) -> Path:
    """Write DIR/report.md, DIR/report.html and DIR/figures/*.png; return the report.md path."""
    directory = Path(directory)
    run, results = load_run(directory)
    config = results.get("config") or run.get("config") or {}
    metrics = read_csv(directory / "metrics.csv")
    history = read_csv(directory / "history.csv")
    point = head_point(directory, results)
    methods = ordered(results.get("methods", {}))
    name = str(results.get("name") or config.get("name") or directory.name)
    caption = f"{name} · seeds {seeds_text(results.get('seeds', []))}"

    coverage = coverage_table(metrics, point, ci_level(config))
    figures = draw_figures(directory, results, coverage, history, point, methods, caption)
    markdown = render_markdown(run, results, config, metrics, coverage, figures, point, methods)
    atomic_write_bytes(directory / "report.md", markdown.encode("utf-8"))
    page = render_html(markdown, f"fedrisk report — {name}", directory)
    atomic_write_bytes(directory / "report.html", page.encode("utf-8"))
    return directory / "report.md"


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
    parts.append(summary.first_page(results, config, metrics, coverage, point))
    parts.append("---\n\n# Details")
    parts.append(tables.what_was_run(run, results, config, metrics, point, methods))
    parts.append(tables.headline(results, config, methods, point))
    parts.append(tables.cost(results))
    if trees := trees_section(results, methods):  # gradient-boosted trees only
        parts.append(trees)
    if out_of_time_table := out_of_time.section(results, methods):
        parts.append(out_of_time_table)
    if topology == "horizontal" and results.get("parties"):
        parts.append(banks.section(results, methods))
    if results.get("sweep"):
        parts.append(tables.sweep(results["sweep"], methods))
    if topology == "vertical" and not coverage.empty:
        parts.append(tables.coverage(coverage, methods))
    if results.get("audits") and not results.get("sweep"):
        parts.append(tables.audits(results["audits"]))
    if figures:
        parts.append(figures_section(figures))
    parts.append(tables.how_to_read(topology))
    return "\n\n".join(parts) + "\n"
