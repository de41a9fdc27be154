"""Group fairness of the credit decision: does federation narrow or widen gaps between borrower groups?

Why: industry reports cite rural and smaller firms getting worse terms from automated models, often because
the bank sees too little of them. Federation adds data; whether it closes a group's gap or only improves
the average is an empirical question the audit answers per (point, seed) for every method.

The decision is the one the framework already reports (``evaluation.approval_rate``): each label holder
approves the safest ``approval_rate`` share of its own test applicants (one cut-off per bank, the same rule
for every method), and the decisions are then looked at per group. Per group and method: applicants,
default rate, KS, approval rate, bad rate among the approved, and approval rate among non-defaulters.
Across groups (fairlearn's definitions, favourable outcome = approval, "qualified" = did not default):

- demographic-parity difference = max − min approval rate;
- equal-opportunity difference = max − min approval rate among non-defaulters.

Group statistics come from fairlearn's ``MetricFrame``; the differences are taken over groups with at
least ``min_group_size`` applicants (a group of five firms has an approval rate, not evidence).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedrisk.config.audit import FairnessConfig

# The experiment config composes `FairnessConfig`, so this module is imported by every `fedrisk run`:
# fairlearn and scikit-learn are imported only when the audit runs.
if TYPE_CHECKING:  # the runner imports the audits, not the other way round
    from fedrisk.config.experiment import ExperimentConfig
    from fedrisk.data.outcome import MethodOutcome
    from fedrisk.data.setting import Setting

MISSING = "(missing)"


# ---------------------------------------------------------------------------------------------------------
# The decision and the group metrics


def approve_safest(p: np.ndarray, approval_rate: float) -> np.ndarray:
    """Boolean decisions: the ``approval_rate`` share with the lowest scores (ties in input order).

    Same rule and rounding as `fedrisk.core.metrics.bad_rate_at_approval`.
    """
    p = np.asarray(p, dtype=np.float64)
    n_approved = max(1, int(round(approval_rate * len(p))))
    approved = np.zeros(len(p), dtype=bool)
    approved[np.argsort(p, kind="stable")[:n_approved]] = True
    return approved


def _ks(y_true: np.ndarray, y_pred: np.ndarray, score: np.ndarray) -> float:
    y_true = np.asarray(y_true)
    from fedrisk.core.metrics import ks_statistic

    return ks_statistic(y_true, np.asarray(score)) if 0 < y_true.sum() < len(y_true) else float("nan")


def _bad_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    approved = np.asarray(y_pred).astype(bool)
    return float(np.asarray(y_true)[approved].mean()) if approved.any() else float("nan")


def _approval_good(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    good = np.asarray(y_true) == 0
    if not good.any():
        return float("nan")
    from fairlearn.metrics import true_positive_rate

    # fairlearn's TPR with "did not default" as the positive class and approval as the prediction
    return float(true_positive_rate(good.astype(int), np.asarray(y_pred).astype(int), pos_label=1))


def group_metrics(
    y: np.ndarray, p: np.ndarray, approved: np.ndarray, groups: pd.Series, min_group_size: int
) -> dict[str, Any]:
    """Per-group table and cross-group differences for one method's decisions (fairlearn ``MetricFrame``)."""
    from fairlearn.metrics import MetricFrame, selection_rate

    y = np.asarray(y).astype(int)
    decision = np.asarray(approved).astype(int)
    frame = MetricFrame(
        metrics={
            "n": lambda yt, yp: len(yt),
            "default_rate": lambda yt, yp: float(np.mean(yt)),
            "ks": _ks,
            "approval_rate": selection_rate,
            "bad_rate": _bad_rate,
            "approval_rate_good": _approval_good,
        },
        y_true=y,
        y_pred=decision,
        sensitive_features=pd.Series(np.asarray(groups, dtype=object), name="group"),
        sample_params={"ks": {"score": np.asarray(p, dtype=np.float64)}},
    )
    table = frame.by_group
    counted = table[table["n"] >= min_group_size]
    by_group = {
        str(g): {k: (int(v) if k == "n" else _num(v)) for k, v in row.items()} for g, row in table.iterrows()
    }
    for g in by_group:
        by_group[g]["share"] = by_group[g]["n"] / len(y)

    def spread(column: str) -> float | None:
        values = counted[column].dropna()
        return float(values.max() - values.min()) if len(values) >= 2 else None

    return {
        "by_group": by_group,
        "overall": {k: _num(v) for k, v in frame.overall.items()},
        "groups_compared": [str(g) for g in counted.index],
        "demographic_parity_difference": spread("approval_rate"),
        "equal_opportunity_difference": spread("approval_rate_good"),
        "ks_range": spread("ks"),
        "bad_rate_range": spread("bad_rate"),
    }


def _num(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


# ---------------------------------------------------------------------------------------------------------
# From the runner's outcomes


def _as_groups(values: pd.Series) -> pd.Series:
    """Group labels: categories as strings, numbers in quintiles (edges over every holder's applicants)."""
    if pd.api.types.is_numeric_dtype(values):
        labels = pd.qcut(values, 5, duplicates="drop").astype(str)
    else:
        labels = values.astype(object).astype(str)
    return labels.where(values.notna(), MISSING)


def decisions(
    setting: Setting, outcome: MethodOutcome, split: str, approval_rate: float, columns: Sequence[str]
) -> pd.DataFrame:
    """One row per scored applicant of ``split`` (every label holder): y, p, approved and group columns.

    A group column is None for the rows of a holder whose table lacks it.
    """
    frames, raw = [], {c: [] for c in columns}
    for (party, name), scored in outcome.scores.items():
        if name != split or party not in setting.parties:
            continue
        table = setting.parties[party]
        rows = pd.Index(table.ids).get_indexer(scored.ids)
        if (rows < 0).any():
            raise ValueError(f"{party}/{name}: {int((rows < 0).sum())} scored ids are not in {party}'s table")
        frames.append(
            pd.DataFrame(
                {
                    "party": party,
                    "y": np.asarray(scored.y).astype(int),
                    "p": np.asarray(scored.p, dtype=np.float64),
                    "approved": approve_safest(scored.p, approval_rate),
                }
            )
        )
        for column in columns:
            has = column in table.features.columns
            values = table.features[column].iloc[rows] if has else pd.Series(np.nan, index=range(len(rows)))
            raw[column].append((has, values.reset_index(drop=True)))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    for column, parts in raw.items():
        if not any(has for has, _ in parts):
            continue
        present = np.concatenate([np.full(len(v), has) for has, v in parts])
        values = pd.concat([v for has, v in parts if has], ignore_index=True)
        if not pd.api.types.is_numeric_dtype(values):
            values = values.astype(object)
        labels = np.full(len(out), None, dtype=object)
        labels[present] = _as_groups(values).to_numpy()
        out[column] = labels
    return out


def fairness_audit(
    config: ExperimentConfig, setting: Setting, outcomes: Mapping[str, MethodOutcome], cfg: FairnessConfig
) -> dict:
    """Group metrics per method and group column, and the followed gap (rural vs urban) across methods.

    Returns
    -------
    dict
        ``groups[column][method]`` = `group_metrics` output; ``gap`` = the followed group's approval gap
        (and among non-defaulters) per method, with ``federated_vs_siloed`` = "narrows" / "widens";
        ``missing_groups`` lists columns no label holder has. JSON-serialisable.
    """
    if not cfg.enabled:
        return {"enabled": False}
    rate = cfg.approval_rate or config.evaluation.approval_rate
    out: dict[str, Any] = {
        "enabled": True,
        "split": cfg.split,
        "approval_rate": rate,
        "cutoff": "each label holder approves the safest share of its own applicants; groups pooled over holders",
        "min_group_size": cfg.min_group_size,
        "groups": {},
        "missing_groups": [],
    }
    tables = {m: decisions(setting, o, cfg.split, rate, cfg.groups) for m, o in outcomes.items()}
    tables = {m: t for m, t in tables.items() if len(t)}
    for column in cfg.groups:
        present = {m: t for m, t in tables.items() if column in t.columns and t[column].notna().any()}
        if not present:
            out["missing_groups"].append(column)
            continue
        out["groups"][column] = {}
        for method, t in present.items():
            rows = t[t[column].notna()]
            out["groups"][column][method] = group_metrics(
                rows["y"].to_numpy(),
                rows["p"].to_numpy(),
                rows["approved"].to_numpy(),
                rows[column],
                cfg.min_group_size,
            )
    out["gap"] = _followed_gap(out["groups"].get(cfg.gap_group, {}), cfg)
    return out


def _followed_gap(per_method: Mapping[str, dict], cfg: FairnessConfig) -> dict[str, Any]:
    """``value − reference`` approval rates per method (negative = the group is approved less)."""
    gap: dict[str, Any] = {
        "group": cfg.gap_group,
        "value": cfg.gap_group_value,
        "reference": cfg.gap_reference,
        "approval_gap": {},
        "approval_gap_good": {},
    }
    for method, result in per_method.items():
        groups = result["by_group"]
        a, b = groups.get(cfg.gap_group_value), groups.get(cfg.gap_reference)
        if a is None or b is None:
            continue
        for key, metric in (("approval_gap", "approval_rate"), ("approval_gap_good", "approval_rate_good")):
            if a[metric] is not None and b[metric] is not None:
                gap[key][method] = a[metric] - b[metric]
    fed, silo = gap["approval_gap"].get("federated"), gap["approval_gap"].get("siloed")
    if fed is not None and silo is not None:
        change = abs(fed) - abs(silo)
        gap["federated_minus_siloed_abs"] = change
        gap["federated_vs_siloed"] = "narrows" if change < 0 else "widens" if change > 0 else "unchanged"
    return gap
