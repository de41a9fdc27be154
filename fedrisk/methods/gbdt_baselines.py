"""GBDT siloed and centralized baselines: xgboost-cpu with the federated trees' parameters and bins.

Every holder bins its own columns on the training applicants it holds (`Binner`, xgboost's sketch), exactly
as it does inside the federated protocols; absent firms are missing values. The pooled matrix is those
encodings side by side, so the centralized booster sees the same bins as SecureBoost (whose trees equal it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey
from fedrisk.data.setting import Setting
from fedrisk.models.gbdt import Binner, GBDTParams, train_xgboost
from fedrisk.models.gbdt.baseline import XGBoostModel
from fedrisk.models.gbdt.horizontal import bank_levels, union_levels

EVAL = ("train", "val")


@dataclass
class HolderEncoding:
    """One holder's encoding of the label holder's applicants: xgboost input per split, NaN = missing/absent."""

    columns: list[str]
    encoded: dict[str, np.ndarray]


def vertical_encodings(setting: Setting, max_bins: int) -> dict[str, HolderEncoding]:
    """Each holder's bins fitted on the training applicants it holds, applied to every split."""
    holder = setting.label_holders[0]
    splits = setting.splits[holder]
    out = {}
    for name, table in setting.parties.items():
        index = pd.Index(table.ids)
        rows = {split: index.get_indexer(ids) for split, ids in splits.items()}
        fit_rows = rows["train"][rows["train"] >= 0]
        binner = Binner(max_bins, name).fit(table.features.iloc[fit_rows])
        encoded = {split: binner.encode_rows(table.features, r) for split, r in rows.items()}
        out[name] = HolderEncoding([f"{name}:{c}" for c in binner.columns_], encoded)
    return out


def _history(model: XGBoostModel, party: str | None = None) -> list[dict]:
    rows = [{"tree": t + 1, "val_loss": float(v)} for t, v in enumerate(model.valid_loss)]
    return [{"party": party, **r} for r in rows] if party else rows


def holder_importance(gain_by_column: dict[str, float]) -> dict[str, float]:
    """Share of the total split gain per holder (columns are named ``holder:column``)."""
    total = sum(gain_by_column.values())
    shares: dict[str, float] = {}
    for column, gain in gain_by_column.items():
        holder = column.split(":", 1)[0]
        shares[holder] = shares.get(holder, 0.0) + (gain / total if total > 0 else 0.0)
    return shares


def _vertical(
    setting: Setting, params: GBDTParams, holders: list[str], method: str, segments
) -> MethodOutcome:
    started = time.perf_counter()
    label_holder = setting.label_holders[0]
    encodings = vertical_encodings(setting, params.max_bins)
    splits = setting.splits[label_holder]
    table = setting.parties[label_holder]
    y = {s: table.label[pd.Index(table.ids).get_indexer(ids)] for s, ids in splits.items()}
    X = {s: np.hstack([encodings[h].encoded[s] for h in holders]) for s in splits}
    columns = [c for h in holders for c in encodings[h].columns]
    model = train_xgboost(X["train"], y["train"], params, valid=(X["val"], y["val"]))
    scores = {
        ScoreKey(label_holder, s): ScoredSet(ids, y[s], model.predict_proba(X[s]), dict(segments.get(s, {})))
        for s, ids in splits.items()
        if s != "train"
    }
    return MethodOutcome(
        method,
        scores,
        history=_history(model),
        cost={
            "wall_seconds": time.perf_counter() - started,
            "bytes_sent": 0,
            "epsilon": None,
            "trees": model.n_trees,
        },
        train_scores=model.predict_proba(X["train"]),
        extra={"importance": holder_importance(model.gain_by_column(columns))},
    )


def siloed_vertical(setting: Setting, params: GBDTParams, segments) -> MethodOutcome:
    """The label holder's own columns only."""
    return _vertical(setting, params, [setting.label_holders[0]], "siloed", segments)


def centralized_vertical(setting: Setting, params: GBDTParams, segments) -> MethodOutcome:
    """Every holder's columns pooled on the label holder's applicants (the join federation avoids)."""
    holders = [setting.label_holders[0], *[h for h in setting.parties if h != setting.label_holders[0]]]
    return _vertical(setting, params, holders, "centralized", segments)


# ---------------------------------------------------------------------------------------------------------
# Horizontal


def _bank_split(setting: Setting, bank: str, split: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    table = setting.parties[bank]
    ids = setting.splits[bank][split]
    rows = pd.Index(table.ids).get_indexer(ids)
    return table.features.iloc[rows].reset_index(drop=True), table.label[rows], ids


def siloed_horizontal(setting: Setting, params: GBDTParams) -> MethodOutcome:
    """Each bank's own booster on its own applicants, scored on its own test applicants."""
    started = time.perf_counter()
    scores, history = {}, []
    for bank in setting.label_holders:
        frames = {s: _bank_split(setting, bank, s) for s in setting.splits[bank]}
        binner = Binner(params.max_bins, bank).fit(frames["train"][0])
        X = {s: binner.encode(f) for s, (f, _, _) in frames.items()}
        model = train_xgboost(X["train"], frames["train"][1], params, valid=(X["val"], frames["val"][1]))
        history += _history(model, bank)
        for s, (_, y, ids) in frames.items():
            if s != "train":
                scores[ScoreKey(bank, s)] = ScoredSet(ids, y, model.predict_proba(X[s]))
    cost = {"wall_seconds": time.perf_counter() - started, "bytes_sent": 0, "epsilon": None}
    return MethodOutcome("siloed", scores, history=history, cost=cost)


def centralized_horizontal(setting: Setting, params: GBDTParams) -> MethodOutcome:
    """Every bank's training applicants pooled into one booster; scored on each bank's test applicants."""
    started = time.perf_counter()
    banks = setting.label_holders
    frames = {b: {s: _bank_split(setting, b, s) for s in setting.splits[b]} for b in banks}
    levels = union_levels([bank_levels(frames[b]["train"][0]) for b in banks])
    pooled = {s: pd.concat([frames[b][s][0] for b in banks], ignore_index=True) for s in EVAL}
    binner = Binner(params.max_bins, "pooled").fit(pooled["train"], levels=levels)
    y = {s: np.concatenate([frames[b][s][1] for b in banks]) for s in EVAL}
    X = {s: binner.encode(pooled[s]) for s in EVAL}
    model = train_xgboost(X["train"], y["train"], params, valid=(X["val"], y["val"]))
    scores = {
        ScoreKey(b, s): ScoredSet(ids, yb, model.predict_proba(binner.encode(f)))
        for b in banks
        for s, (f, yb, ids) in frames[b].items()
        if s != "train"
    }
    cost = {
        "wall_seconds": time.perf_counter() - started,
        "bytes_sent": 0,
        "epsilon": None,
        "trees": model.n_trees,
    }
    return MethodOutcome(
        "centralized",
        scores,
        history=_history(model),
        cost=cost,
        train_scores=model.predict_proba(X["train"]),
    )
