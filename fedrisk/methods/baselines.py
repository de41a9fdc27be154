"""The two reference points every federated result is judged against.

* **siloed** — each label holder alone, on its own features and applicants (what a bank can do today);
* **centralized** — all holders' rows pooled in one place (the upper bound nobody may build in real life);
  for vertical runs this is the federated split model's pooled twin (`fedrisk.federation.vertical`).

Both use the same model family, the same training routine and the same test applicants as the federated
method, so the differences are the data, not the optimiser.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pandas as pd

from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey
from fedrisk.data.preprocessing import HolderPreprocessor
from fedrisk.data.table import PartyTable
from fedrisk.models import ModelConfig, TrainConfig, make_model, predict_proba, train
from fedrisk.models.training import seed_torch


def _positions(table: PartyTable, ids: np.ndarray) -> np.ndarray:
    index = pd.Index(table.ids)
    return index.get_indexer(ids)


def _fit(
    X: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    seed: int,
) -> tuple[object, list[dict]]:
    """The shared training routine on train rows, early-stopped on val rows; returns model and history."""
    seed_torch(seed)
    model = make_model(model_cfg.kind, X["train"].shape[1], model_cfg.hidden, model_cfg.dropout)
    history = train(model, X["train"], y["train"], X["val"], y["val"], train_cfg, seed=seed)
    return model, history.as_rows()


def siloed_vertical(
    bank: PartyTable,
    splits: Mapping[str, np.ndarray],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    seed: int,
    segments: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> MethodOutcome:
    """The label holder alone: its own features, preprocessed on its own training rows."""
    start = time.perf_counter()
    rows = {name: _positions(bank, ids) for name, ids in splits.items()}
    prep = HolderPreprocessor().fit(bank.features.iloc[rows["train"]])
    X = {name: prep.transform(bank.features.iloc[r]) for name, r in rows.items()}
    y = {name: bank.label[r] for name, r in rows.items()}
    model, history = _fit(X, y, model_cfg, train_cfg, seed)
    scores = {
        ScoreKey(bank.name, name): ScoredSet(
            splits[name], y[name], predict_proba(model, X[name]), dict((segments or {}).get(name, {}))
        )
        for name in splits
        if name != "train"  # val too: approval thresholds are chosen on it (evaluation.summary)
    }
    return MethodOutcome(
        "siloed",
        scores,
        history=history,
        cost={"wall_seconds": time.perf_counter() - start, "bytes_sent": 0, "epsilon": None},
        train_scores=predict_proba(model, X["train"]),
    )


def pooled_matrix(
    parties: Mapping[str, PartyTable],
    label_holder: str,
    ids: np.ndarray,
    preps: dict[str, HolderPreprocessor],
) -> np.ndarray:
    """Join every holder's encoded block onto the label holder's applicants; absent firms get zeros and a flag.

    This is exactly the join federation avoids: only pooled references (and audits) may call it.
    """
    blocks = []
    for name, table in parties.items():
        pos = _positions(table, ids)
        present = pos >= 0
        block = np.zeros((len(ids), preps[name].n_features_out_), dtype=np.float32)
        if present.any():
            block[present] = preps[name].transform(table.features.iloc[pos[present]])
        blocks.append(block)
        if name != label_holder:
            blocks.append(present.astype(np.float32)[:, None])
    return np.hstack(blocks)


def siloed_horizontal(
    banks: Mapping[str, PartyTable],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    seed: int,
) -> MethodOutcome:
    """Each bank trains on its own applicants and is scored on its own test applicants."""
    start = time.perf_counter()
    scores: dict[str, ScoredSet] = {}
    history: list[dict] = []
    for name, bank in banks.items():
        single = siloed_vertical(bank, splits[name], model_cfg, train_cfg, seed)
        scores.update(single.scores)
        history += [{"party": name, **row} for row in single.history]
    return MethodOutcome(
        "siloed",
        scores,
        history=history,
        cost={"wall_seconds": time.perf_counter() - start, "bytes_sent": 0, "epsilon": None},
    )


def centralized_horizontal(
    banks: Mapping[str, PartyTable],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    seed: int,
    max_categories: int = 20,
) -> MethodOutcome:
    """Every bank's training rows pooled; the one model scored on each bank's own test applicants.

    Encoded with the federation's own encoder (``max_categories`` one-hot levels per column, as
    ``federation.horizontal.max_categories`` gives the federated run), so pooled and federated differ
    only in how they train.
    """
    start = time.perf_counter()

    def rows_of(split: str) -> tuple[pd.DataFrame, np.ndarray]:
        positions = {name: _positions(bank, splits[name][split]) for name, bank in banks.items()}
        frame = pd.concat([banks[n].features.iloc[p] for n, p in positions.items()], ignore_index=True)
        return frame, np.concatenate([banks[n].label[p] for n, p in positions.items()])

    from fedrisk.federation.horizontal import shared_preprocessor

    train_df, y_train = rows_of("train")
    val_df, y_val = rows_of("val")
    prep = shared_preprocessor(banks, splits, max_categories)
    X = {"train": prep.transform(train_df), "val": prep.transform(val_df)}
    model, history = _fit(X, {"train": y_train, "val": y_val}, model_cfg, train_cfg, seed)
    scores = {}
    test_splits = sorted({s for name in banks for s in splits[name] if s != "train"})
    for split in test_splits:
        for name, bank in banks.items():
            if split not in splits[name]:
                continue
            pos = _positions(bank, splits[name][split])
            p = predict_proba(model, prep.transform(bank.features.iloc[pos]))
            scores[ScoreKey(name, split)] = ScoredSet(splits[name][split], bank.label[pos], p)
    return MethodOutcome(
        "centralized",
        scores,
        history=history,
        cost={"wall_seconds": time.perf_counter() - start, "bytes_sent": 0, "epsilon": None},
        train_scores=predict_proba(model, X["train"]),
    )


REFERENCE_MODELS = ("pooled_sklearn_lr", "pooled_hgb")
"""Sanity rows on pooled data from scikit-learn (``[evaluation] reference_models = true``)."""


def reference_model(
    method: str,
    parties: Mapping[str, PartyTable],
    label_holders: list[str],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    seed: int,
) -> MethodOutcome:
    """scikit-learn's LogisticRegression or HistGradientBoosting on the pooled join (an outside check)."""
    start = time.perf_counter()
    scores: dict[str, ScoredSet] = {}
    if len(label_holders) == 1:  # vertical: join every holder onto the label holder's applicants
        holder = label_holders[0]
        bank = parties[holder]
        split = splits[holder]
        preps = {
            name: HolderPreprocessor().fit(
                table.features.iloc[_positions(bank, split["train"])] if name == holder else table.features
            )
            for name, table in parties.items()
        }
        X = {name: pooled_matrix(parties, holder, ids, preps) for name, ids in split.items()}
        y = {name: bank.label[_positions(bank, ids)] for name, ids in split.items()}
        model = _sklearn(method, seed).fit(X["train"], y["train"])
        for name, ids in split.items():
            if name != "train":
                scores[ScoreKey(holder, name)] = ScoredSet(ids, y[name], model.predict_proba(X[name])[:, 1])
    else:  # horizontal: stack the banks' rows
        frames = [parties[b].features.iloc[_positions(parties[b], splits[b]["train"])] for b in label_holders]
        prep = HolderPreprocessor().fit(pd.concat(frames, ignore_index=True))
        X_train = np.vstack([prep.transform(f) for f in frames])
        y_train = np.concatenate(
            [parties[b].label[_positions(parties[b], splits[b]["train"])] for b in label_holders]
        )
        model = _sklearn(method, seed).fit(X_train, y_train)
        for b in label_holders:
            for name, ids in splits[b].items():
                if name != "train":
                    pos = _positions(parties[b], ids)
                    p = model.predict_proba(prep.transform(parties[b].features.iloc[pos]))[:, 1]
                    scores[ScoreKey(b, name)] = ScoredSet(ids, parties[b].label[pos], p)
    return MethodOutcome(
        method, scores, cost={"wall_seconds": time.perf_counter() - start, "bytes_sent": 0, "epsilon": None}
    )


def _sklearn(method: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    if method == "pooled_sklearn_lr":
        return LogisticRegression(max_iter=2000, C=1.0)
    return HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, early_stopping=True, random_state=seed
    )
