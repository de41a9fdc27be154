"""The report a risk committee reads: first page, one self-contained HTML file, legible figures."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd
import pytest

from fedrisk.report import plots, summary
from fedrisk.report.fmt import fmt_pct_ci, human_bytes


def test_first_page_question_answer_cost_caveats_then_details(vertical_dir: Path) -> None:
    results = json.loads((vertical_dir / "results.json").read_text())
    md = (vertical_dir / "report.md").read_text()
    heads = ["## The question", "## The answer", "## What it costs", "## What could make this number wrong"]
    positions = [md.index(h) for h in [*heads, "# Details", "## What was run", "## Figures"]]
    assert positions == sorted(positions)
    first = md[: md.index("# Details")]
    assert "with **supply_chain** and **tax**" in first
    assert fmt_pct_ci(results["uplift"]["ks_relative"]) in first
    assert f"{results['methods']['siloed']['ks']['mean']:.3f} (bank alone)" in first
    assert human_bytes(results["cost"]["bytes_sent"]) + " sent per federated run" in first
    assert "**Synthetic data**" in first and "**Few repetitions**: 2 seeds" in first
    assert "**In-time test only**" in first  # the unit runs have no out-of-time split


def _results(lo: float, hi: float, **extra) -> dict:
    ks = {m: {"mean": v, "ci": [v - 0.03, v + 0.03]} for m, v in (("siloed", 0.30), ("federated", 0.34))}
    ks["centralized"] = {"mean": 0.35, "ci": [0.32, 0.38]}
    mid = (lo + hi) / 2
    return {
        "seeds": [0, 1, 2, 3, 4],
        "methods": {m: {"ks": block} for m, block in ks.items()},
        "uplift": {
            "ks_relative": {"mean": mid / 0.3, "ci": [lo / 0.3, hi / 0.3]},
            "ks_points": {"mean": mid, "ci": [lo, hi]},
        },
        "complete": True,
        **extra,
    }


@pytest.mark.parametrize(
    ("lo", "hi", "verdict"),
    [(0.02, 0.06, "**Yes:"), (-0.01, 0.06, "**Not clearly"), (-0.06, -0.01, "**No — federation makes")],
)
def test_answer_says_what_the_interval_says(lo: float, hi: float, verdict: str) -> None:
    text = summary.answer(_results(lo, hi), {})
    assert text.startswith(verdict)
    assert "recovers 80% of the pooled gain" in text  # (0.34 - 0.30) / (0.35 - 0.30)


def test_caveats_only_where_they_apply() -> None:
    metrics = pd.DataFrame(
        [
            {"point": "base", "seed": s, "method": "siloed", "split": split, "n": 4000, "bad_rate": 0.1}
            for s in range(5)
            for split in ("test", "oot")
        ]
    )
    config = {"data": {"source": "tables", "parties": [{"name": "bank", "label": "y"}, {"name": "tax"}]}}
    clean = summary.caveats(_results(0.02, 0.06), config, metrics, pd.DataFrame(), "base")
    assert [c.split("**")[1] for c in clean] == ["Simulated on one machine"]
    few = metrics.assign(n=500)  # 50 defaults per seed
    noisy = summary.caveats(
        _results(-0.01, 0.06, complete=False), {}, few[few["split"] == "test"], pd.DataFrame(), "base"
    )
    names = [c.split("**")[1] for c in noisy]
    assert names[0] == "The run is incomplete"
    assert {
        "Synthetic data",
        "Few defaults",
        "The gain is not distinguishable from noise",
        "In-time test only",
    } <= set(names)


def test_html_is_one_file_with_every_figure_inlined(vertical_dir: Path) -> None:
    page = (vertical_dir / "report.html").read_text()
    assert 'src="figures/' not in page
    figures = sorted((vertical_dir / "figures").glob("*.png"))
    assert page.count('src="data:image/png;base64,') == len(figures) >= 4
    for path in figures:
        assert base64.b64encode(path.read_bytes()).decode() in page


def test_roc_draws_federated_last_and_distinct_from_centralized(scored) -> None:
    scored = {
        "siloed": scored["siloed"],
        "federated": scored["federated"],
        "centralized": scored["federated"],
    }
    ax = plots.roc_curves(scored, "cap", "test set of bank").axes[0]
    lines = {line.get_label().split(":")[0]: line for line in ax.get_lines()}
    drawn = [label for label in lines if label != "random ordering"]
    assert drawn == ["siloed (bank alone)", "centralized (pooled data)", "federated"]  # federated on top
    fed, cen = lines["federated"], lines["centralized (pooled data)"]
    assert fed.get_linestyle() != cen.get_linestyle() and cen.get_linewidth() > fed.get_linewidth()


def test_training_curves_zoom_past_the_first_epoch() -> None:
    rows = [
        {
            "method": "siloed",
            "seed": s,
            "epoch": e,
            "train_loss": 5.0 if e == 1 else 0.2 + 0.01 / e,
            "val_loss": 0.21,
        }
        for s in (0, 1)
        for e in range(1, 11)
    ]
    ax = plots.training_curves(pd.DataFrame(rows), "cap").axes[0]
    low, high = ax.get_ylim()
    assert high < 0.25 and low > 0.15  # the first epoch's 5.0 would squash 0.20-0.21 into a flat line
