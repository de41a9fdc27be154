"""`fedrisk report`: files written, figures carry the right series, tables equal results.json.

The results directories come from tests/report/conftest.py (the runner's own writers, random scores).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.container import ErrorbarContainer

from fedrisk.core.errors import FedriskError
from fedrisk.core.metrics import ks_statistic
from fedrisk.report import party_plots, plots
from fedrisk.report.build import build_report
from fedrisk.report.fmt import fmt_ci, human_bytes, human_seconds
from fedrisk.report.tables import audits

EPS_KEY = "federation.horizontal.dp.target_epsilon"


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The first pipe table after a heading, as lists of cells (header and separator dropped)."""
    lines = markdown.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return block[2:]


# ---------------------------------------------------------------------------------------------------------
# The report files


def test_vertical_report_files_and_tables(vertical_dir: Path) -> None:
    results = json.loads((vertical_dir / "results.json").read_text())
    md = (vertical_dir / "report.md").read_text()
    figures = {p.name for p in (vertical_dir / "figures").glob("*.png")}
    assert figures == {
        "ks_curves.png",
        "roc_curves.png",
        "uplift_sweep.png",
        "training_curves.png",
        "coverage_ks.png",
    }
    for name in figures:
        assert f"](figures/{name})" in md
        assert (vertical_dir / "figures" / name).stat().st_size > 10_000
    assert "INCOMPLETE" not in md
    assert "**Topology:** vertical" in md and "inprocess" in md and "2,000 firms" in md

    headline = {row[0]: row[1:] for row in _table_rows(md, "## Headline results")}
    assert list(headline) == ["siloed", "federated", "centralized"]
    for method, cells in headline.items():
        block = results["methods"][method]
        assert cells == [fmt_ci(block["ks"]), fmt_ci(block["auc"]), fmt_ci(block["gini"])]
    uplift = {row[0]: row[1] for row in _table_rows(md, "**Uplift of federated over siloed**")}
    rel = results["uplift"]["ks_relative"]
    assert (
        uplift["KS relative"]
        == f"{100 * rel['mean']:+.1f}% [{100 * rel['ci'][0]:+.1f}%, {100 * rel['ci'][1]:+.1f}%]"
    )
    assert uplift["KS points"] == fmt_ci(results["uplift"]["ks_points"])

    sweep_rows = _table_rows(md, "## Sweep")
    assert [r[0] for r in sweep_rows] == ["0.3", "0.7"]
    for row, entry in zip(sweep_rows, results["sweep"], strict=True):
        assert row[2] == fmt_ci(entry["methods"]["federated"]["ks"])

    metrics = pd.read_csv(vertical_dir / "metrics.csv")
    coverage = _table_rows(md, "## KS by partner coverage")
    assert {(r[0], r[1]) for r in coverage} == {
        (p, s) for p in ("tax", "supply_chain") for s in ("covered", "uncovered")
    }
    row = next(r for r in coverage if r[:2] == ["tax", "covered"])
    sel = metrics[
        (metrics["point"] == results["sweep"][0]["point"])
        & (metrics["split"] == "test[covered_by_tax]")
        & (metrics["method"] == "federated")
    ]
    assert row[5].startswith(f"{sel['ks'].mean():.3f} [")
    assert "## Per bank" not in md

    page = (vertical_dir / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    assert "KS(federated) / KS(siloed) − 1" in page


def test_horizontal_report_banks_sweep_and_privacy(horizontal_dir: Path) -> None:
    results = json.loads((horizontal_dir / "results.json").read_text())
    md = (horizontal_dir / "report.md").read_text()
    figures = {p.name for p in (horizontal_dir / "figures").glob("*.png")}
    assert {"per_bank_uplift.png", "privacy_utility.png", "uplift_sweep.png", "ks_curves.png"} <= figures
    assert "coverage_ks.png" not in figures

    banks = _table_rows(md, "## Per bank")
    assert [r[0] for r in banks] == ["bank_2", "bank_3", "bank_1"]  # smallest test set first
    for row in banks:
        party = results["parties"][row[0]]
        assert row[1] == f"{party['n_test']:,}"
        assert row[3] == fmt_ci(party["methods"]["federated"]["ks"])
        assert row[5] == fmt_ci(party["uplift"]["ks_points"])
        assert (
            row[6].split(" ")[0]
            == {"pays": "yes", "costs": "no", "unclear": "unclear"}[
                results["banks"]["verdicts"][row[0]]["federated"]
            ]
        )

    sweep_rows = _table_rows(md, "## Sweep")
    assert [r[0] for r in sweep_rows] == ["1.0", "8.0", "inf"]
    assert sweep_rows[0][-1] == "1.00 (δ = 1e-05)" and sweep_rows[-1][-1] == "∞ (no DP)"
    cost = dict(_table_rows(md, "## Cost"))
    assert cost["Bytes sent, per federated run"] == "2.3 MB"
    assert cost["Privacy budget ε"] == "1.00 (δ = 1e-05)"


def test_incomplete_run_is_flagged_at_the_top(tmp_path: Path, make_run) -> None:
    root = make_run(tmp_path / "run", vertical=True, sweep={}, drop=("federated", 1))
    assert json.loads((root / "results.json").read_text())["complete"] is False
    (root / "figures").mkdir()
    (root / "figures" / "per_bank_uplift.png").write_bytes(b"stale")
    md = build_report(root).read_text()
    assert md.index("INCOMPLETE RUN") < md.index("## What was run")
    assert not (
        root / "figures" / "per_bank_uplift.png"
    ).exists()  # a stale figure from an earlier build is removed
    assert "## Sweep" not in md and "uplift_sweep.png" not in md


def test_missing_results_are_a_user_error(tmp_path: Path, vertical_dir: Path) -> None:
    with pytest.raises(FedriskError, match="run.json") as info:
        build_report(tmp_path)
    assert "fedrisk run" in info.value.fix
    shutil.copy(vertical_dir / "run.json", tmp_path / "run.json")
    with pytest.raises(FedriskError, match="results.json"):
        build_report(tmp_path)
    with pytest.raises(FedriskError, match="not a directory"):
        build_report(tmp_path / "nope")


def test_formatting_helpers() -> None:
    assert human_bytes(2_345_678) == "2.3 MB" and human_bytes(512) == "512 B"
    assert human_seconds(12.34) == "12.3 s" and human_seconds(245) == "4 min 05 s"
    assert fmt_ci({"mean": 0.5, "ci": [0.4, 0.6]}) == "0.500 [0.400, 0.600]"
    assert fmt_ci({"mean": None, "ci": [None, None]}) == "–"


# ---------------------------------------------------------------------------------------------------------
# The figures carry the right series


def test_ks_curves_mark_the_ks_gap(scored) -> None:
    fig = plots.ks_curves(scored, "cap · seeds [0]", "test set of bank")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["siloed (bank alone)", "federated"]
    for ax, (method, (y, p)) in zip(axes, scored.items(), strict=True):
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == [f"{method}: cumulative share of bads", f"{method}: cumulative share of goods"]
        gap = next(c for c in ax.collections if isinstance(c, LineCollection))
        (x0, lo), (_, hi) = gap.get_segments()[0]
        assert hi - lo == pytest.approx(ks_statistic(y, p))
    assert "cap · seeds [0]" in [t.get_text() for t in fig.texts]


def test_roc_curves_one_line_per_method(scored) -> None:
    fig = plots.roc_curves(scored, "cap", "test set of bank")
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert (
        labels[0].startswith("siloed")
        and labels[1].startswith("federated")
        and labels[2] == "random ordering"
    )


def test_sweep_figures_follow_results(horizontal_dir: Path) -> None:
    results = json.loads((horizontal_dir / "results.json").read_text())
    sweep = results["sweep"]
    fig = plots.privacy_utility(sweep, EPS_KEY, "cap")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    dp = lines["federated with DP"]
    assert list(dp.get_xdata()) == [1.0, 8.0]
    assert list(dp.get_ydata()) == pytest.approx([e["methods"]["federated"]["ks"]["mean"] for e in sweep[:2]])
    no_dp = lines["federated, ε = ∞ (no DP)"]
    assert no_dp.get_linestyle() == "--"
    assert no_dp.get_ydata()[0] == pytest.approx(sweep[2]["methods"]["federated"]["ks"]["mean"])
    assert "siloed (bank alone)" in lines
    assert fig.axes[0].get_xscale() == "log"

    fig = plots.uplift_vs_sweep(sweep, "cap")
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx([100 * e["uplift"]["ks_relative"]["mean"] for e in sweep])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1.0", "8.0", "inf"]


def test_per_bank_uplift_smallest_bank_on_top_at_a_sane_size(horizontal_dir: Path) -> None:
    parties = json.loads((horizontal_dir / "results.json").read_text())["parties"]
    fig = party_plots.per_bank_uplift(parties, "cap")
    ax = fig.axes[0]
    order = ["bank_2", "bank_3", "bank_1"]  # by test size, smallest first = top row
    labels = sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])
    assert [t.get_text().split(" ")[0] for t in labels] == order
    (dots,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    x, y = dots.lines[0].get_data()
    by_row = dict(zip(y, x, strict=True))
    expected = [parties[b]["uplift"]["ks_points"]["mean"] for b in order]
    assert [by_row[k] for k in sorted(by_row, reverse=True)] == pytest.approx(expected)
    width, height = fig.get_size_inches() * fig.dpi
    assert width <= 1000 and height <= 600  # was 2112 x 600 px for three banks


def test_training_curves_one_panel_per_method(horizontal_dir: Path) -> None:
    history = pd.read_csv(horizontal_dir / "history.csv")
    fig = plots.training_curves(history[history["point"] == history["point"].iloc[0]], "cap")
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "round", "epoch"]
    fed = fig.axes[1]
    val = next(line for line in fed.get_lines() if line.get_label() == "federated: validation loss")
    # mean over the two seeds (val_loss = 0.55 / round + 0.02 * seed)
    assert list(val.get_ydata()) == pytest.approx([0.55 / r + 0.01 for r in range(1, 6)])
    assert plots.training_curves(pd.DataFrame(), "cap") is None


def test_every_saved_figure_has_the_caption(vertical_dir: Path) -> None:
    results = json.loads((vertical_dir / "results.json").read_text())
    fig = plots.uplift_vs_sweep(results["sweep"], "unit-vertical · seeds [0, 1]")
    assert any("unit-vertical · seeds [0, 1]" in t.get_text() for t in fig.texts)
    fig = party_plots.coverage_ks(
        pd.DataFrame(
            [
                {"partner": "tax", "segment": s, "method": m, "ks": 0.3, "ks_lo": 0.2, "ks_hi": 0.4, "n": 10}
                for s in ("covered", "uncovered")
                for m in ("siloed", "federated")
            ]
        ),
        ["siloed", "federated"],
        "unit-vertical · seeds [0, 1]",
    )
    assert any("unit-vertical" in t.get_text() for t in fig.texts)
    assert {c.get_label() for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)} == {
        "siloed",
        "federated",
    }
    low, high = fig.axes[0].get_ylim()
    assert low > 0.15 and high < 0.5  # zoomed to the data (KS 0.2-0.4), not 0-1.1


def test_audit_section_lists_every_number_of_the_first_seed():
    blocks = {
        "label_leakage": {
            "seed=0": {
                "partners": {"tax": {"none": {"norm_auc": 0.98}, "noise": {"norm_auc": 0.6, "ks_cost": 0.02}}}
            },
            "seed=1": {"partners": {"tax": {"none": {"norm_auc": 0.5}}}},
        }
    }
    text = audits(blocks)
    assert "### label leakage (seed=0)" in text
    assert "| partners.tax.none.norm_auc | 0.98 |" in text
    assert "| partners.tax.noise.ks_cost | 0.02 |" in text
    assert "0.5 |" not in text  # only the first seed is shown
