"""Who is a training, validation, test or out-of-time applicant: decided once per firm, for every bank.

A firm that borrows at two banks must be in the same split at both: otherwise one bank's test firm is
another bank's training firm, and the pooled and federated models (which see every bank's training rows)
are scored on firms they were trained on. So the split is drawn over the *union* of the label holders'
firm ids (one stratified permutation per seed), and each holder's split is its own ids' share of it.
The later application cohort (out-of-time) is never trained on: a firm that is in it at any bank is an
``oot`` applicant everywhere. With one label holder this is the stratified split of its own applicants.

``accepted_only``: only applicants the bank's past policy approved have an observed outcome, so only they
can be trained and validated on (the others are recorded as ``train_rejected`` / ``val_rejected``); the test
and out-of-time applicants still include everyone, which shows the selection bias a model trained on
approvals carries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from fedrisk.core.errors import FedriskError
from fedrisk.data.table import PartyTable

FIT_SPLITS = ("train", "val")
"""Splits whose rows a model may learn from (everything else is held out)."""
REJECTED = "_rejected"
"""Suffix of a fit split's applicants the bank's past policy rejected (no observed outcome, never used)."""
SPLIT_NAMES = ("train", "val", "test", "oot", *(f"{s}{REJECTED}" for s in FIT_SPLITS))
"""Every split name a holder's applicants can carry."""


def _firm_union(tables: Sequence[PartyTable], out_of_time: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Firm ids of every label holder, each firm's label (bad at any bank) and whether it is out-of-time."""
    if len(tables) == 1:  # one holder: its own row order, so the split is the plain stratified one
        table = tables[0]
        later = table.cohort.astype(bool) if out_of_time and table.cohort is not None else None
        return table.ids, table.label, np.zeros(table.n_rows, bool) if later is None else later
    frame = pd.DataFrame(
        {
            "id": np.concatenate([t.ids for t in tables]),
            "bad": np.concatenate([t.label for t in tables]),
            "later": np.concatenate(
                [
                    t.cohort.astype(bool)
                    if out_of_time and t.cohort is not None
                    else np.zeros(t.n_rows, bool)
                    for t in tables
                ]
            ),
        }
    )
    firms = frame.groupby("id", sort=True).agg(bad=("bad", "max"), later=("later", "max"))
    return firms.index.to_numpy(), firms["bad"].to_numpy(), firms["later"].to_numpy()


def _check_classes(table: PartyTable, development: np.ndarray) -> None:
    y = table.label[development]
    n_bad = int(y.sum())
    if n_bad < 10 or n_bad > len(y) - 10:
        raise FedriskError(
            f"data.parties.{table.name}.label",
            f"{n_bad} defaults among {len(y)} applicants: too few of one class to train and test",
            "use more applicants or a higher default rate",
        )


def split_firms(
    tables: Sequence[PartyTable],
    test_fraction: float,
    val_fraction: float,
    seed: int,
    out_of_time: bool = True,
    accepted_only: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """``{holder: {"train", "val", "test"[, "oot"][, "train_rejected", "val_rejected"]: ids}}``, one split
    per firm for all holders.

    Each holder's ids keep its table order within a split. ``accepted_only`` needs every table's
    ``approved`` flags (the synthetic world records its banks' past decisions).
    """
    for table in tables:
        if table.label is None:
            raise FedriskError(
                f"data.parties.{table.name}.label", "this party has no label", "name its label column"
            )
        if accepted_only and table.approved is None:
            raise FedriskError(
                "split.accepted_only",
                f"{table.name} has no record of its past approval decisions",
                "use the synthetic world (it records them) or set split.accepted_only = false",
            )
    firm_ids, firm_bad, firm_later = _firm_union(tables, out_of_time)
    for table in tables:
        later = table.cohort.astype(bool) if out_of_time and table.cohort is not None else None
        _check_classes(table, np.ones(table.n_rows, bool) if later is None else ~later)
    development = np.flatnonzero(~firm_later)
    rest, test = train_test_split(
        development, test_size=test_fraction, stratify=firm_bad[development], random_state=seed
    )
    train, val = train_test_split(
        rest, test_size=val_fraction, stratify=firm_bad[rest], random_state=seed + 1
    )
    firm_split = np.full(len(firm_ids), "oot", dtype=object)
    firm_split[train], firm_split[val], firm_split[test] = "train", "val", "test"

    out: dict[str, dict[str, np.ndarray]] = {}
    index = pd.Index(firm_ids)
    for table in tables:
        split = firm_split[index.get_indexer(table.ids)]
        if accepted_only:
            unobserved = np.isin(split, FIT_SPLITS) & ~table.approved.astype(bool)
            split = np.where(unobserved, np.char.add(split.astype(str), REJECTED), split)
        out[table.name] = {name: table.ids[split == name] for name in SPLIT_NAMES if (split == name).any()}
        for name in ("train", "val", "test"):
            out[table.name].setdefault(name, table.ids[:0])
    return out


def check_accepted_only(source: str, accepted_only: bool) -> None:
    """``split.accepted_only`` needs the banks' past decisions, which only the synthetic world records."""
    if accepted_only and source == "tables":
        raise FedriskError(
            "split.accepted_only",
            "real tables carry no record of the banks' past approval decisions",
            "set split.accepted_only = false, or use the synthetic world",
        )


def split_applicants(
    table: PartyTable, test_fraction: float, val_fraction: float, seed: int, out_of_time: bool = True
) -> dict[str, np.ndarray]:
    """One label holder's stratified split (``split_firms`` of a single table)."""
    return split_firms([table], test_fraction, val_fraction, seed, out_of_time)[table.name]


def splits_frame(splits: Mapping[str, Mapping[str, np.ndarray]], seed: int) -> pd.DataFrame:
    """The splits as rows ``seed, party, id, split`` (what ``splits.parquet`` holds)."""
    parts = [
        pd.DataFrame({"seed": seed, "party": party, "id": np.asarray(ids).astype(str), "split": name})
        for party, by_split in splits.items()
        for name, ids in by_split.items()
    ]
    frame = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["seed", "party", "id", "split"])
    )
    return frame.astype({"seed": "int64", "party": "category", "split": "category"})


def check_firm_splits(frame: pd.DataFrame) -> list[str]:
    """Firms (per seed and point) whose split differs between parties; empty when the split is by firm.

    A rejected applicant counts in the split it was drawn into (``val_rejected`` is ``val``).
    """
    keys = [c for c in ("point", "seed") if c in frame.columns]
    side = frame["split"].astype(str).str.removesuffix(REJECTED)
    distinct = frame.assign(side=side).groupby([*keys, "id"], observed=True)["side"].nunique()
    return sorted(distinct[distinct > 1].index.get_level_values("id").unique().tolist())
