"""Reading a results directory for the report: the JSON files, the CSVs, one seed's scores.

The report only reads what the runner wrote and never recomputes the contract's numbers, so its tables
always match results.json.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedrisk.core.errors import FedriskError
from fedrisk.evaluation.uncertainty import summarize
from fedrisk.runner.units import finished_methods, load_outcome, unit_dir

METHOD_ORDER = ("siloed", "federated", "personalized", "centralized")
_SEGMENT = re.compile(r"^test\[(covered|uncovered)_by_(.+)\]$")


def load_run(directory: Path) -> tuple[dict, dict]:
    """run.json and results.json, or a one-line user error saying how to get them."""
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


def read_csv(path: Path) -> pd.DataFrame:
    """The CSV, or an empty frame when it is missing or has no rows (e.g. no method logged history)."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def head_point(directory: Path, results: Mapping) -> str:
    """The sweep point the headline numbers come from (the first one; "base" without a sweep)."""
    sweep = results.get("sweep") or []
    if sweep and sweep[0].get("point"):
        return str(sweep[0]["point"])
    if (directory / "units" / "base").exists() or not (directory / "units").exists():
        return "base"
    return sorted(p.name for p in (directory / "units").iterdir() if p.is_dir())[0]


def ordered(methods: Sequence[str] | Mapping[str, Any]) -> list[str]:
    names = list(methods)
    return [m for m in METHOD_ORDER if m in names] + [m for m in names if m not in METHOD_ORDER]


def ci_level(config: Mapping) -> float:
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
        for method in ordered(sorted(done)):
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


def holdout_counts(metrics: pd.DataFrame, point: str) -> tuple[float, float] | None:
    """Test applicants and defaults per seed (summed over label holders) at ``point``."""
    needed = {"point", "split", "seed", "method", "n"}
    if metrics.empty or not needed <= set(metrics.columns):
        return None
    rows = metrics[(metrics["point"].astype(str) == point) & (metrics["split"] == "test")]
    if rows.empty:
        return None
    rows = rows[rows["method"] == rows["method"].iloc[0]]
    n = rows.groupby("seed")["n"].sum()
    bads = (rows["n"] * rows["bad_rate"]).groupby(rows["seed"]).sum() if "bad_rate" in rows else n * np.nan
    return float(n.mean()), float(bads.mean())


def epsilon_key(results: Mapping) -> str | None:
    """The swept key that sets the privacy budget, if any (e.g. federation.horizontal.dp.target_epsilon)."""
    sweep = results.get("sweep") or []
    keys = sweep[0].get("assignment", {}) if sweep else {}
    return next((k for k in keys if "epsilon" in k.lower()), None)
