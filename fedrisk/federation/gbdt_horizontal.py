"""Horizontal gradient-boosted trees on Flower: what the runner calls for ``model.kind = "gbdt"`` with banks.

As for the neural models (`fedrisk.federation.horizontal`): each bank's training and validation rows go to
its own directory (its ClientApp reads nothing else), Flower runs the server (`gbdt_horizontal_server`) with
one ClientApp per bank (`gbdt_horizontal_client`), and the driver plays the banks' scoring step with the
kept trees and the agreed bins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedrisk.core.errors import FedriskError
from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey
from fedrisk.data.table import PartyTable
from fedrisk.federation.backends import read_completion, run_federation
from fedrisk.federation.gbdt_horizontal_client import app as client_app
from fedrisk.federation.gbdt_horizontal_server import INFO_FILE, MODEL_FILE, PARAMS_KEY
from fedrisk.federation.gbdt_horizontal_server import app as server_app
from fedrisk.federation.horizontal_client import bank_files
from fedrisk.federation.nodes import write_party_table
from fedrisk.models.gbdt import Binner, GBDTModel, GBDTParams
from fedrisk.models.gbdt.tree import unpack_trees


@dataclass
class GrownForest:
    """The federated booster as every bank holds it after the run, with the run's record."""

    model: GBDTModel
    binner: Binner
    info: dict
    bytes_sent: int
    rows: dict[str, dict[str, np.ndarray]]
    """Per bank and split, the positions of the split's firms in the bank's table."""
    seconds: float

    def margin(self, bank: PartyTable, positions: np.ndarray) -> np.ndarray:
        return self.model.predict_margin(self.binner.transform(bank.features.iloc[positions]))

    def cost(self) -> dict:
        trees = max(self.info["trees_grown"], 1)
        return {
            "wall_seconds": self.seconds,
            "bytes_sent": self.bytes_sent,
            "epsilon": None,
            "trees": self.info["trees"],
            "trees_grown": self.info["trees_grown"],
            "seconds_per_tree": self.info["seconds_per_tree"],
            "bytes_per_tree": self.bytes_sent / trees,
        }


def grow_gbdt_horizontal(
    banks: Mapping[str, PartyTable],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    params: GBDTParams,
    backend,
    workdir: Path,
) -> GrownForest:
    """Grow one booster across the banks on Flower (each bank's ClientApp reads only its own directory)."""
    started = time.perf_counter()
    if len(banks) < 2:
        raise FedriskError(
            "world.n_banks", f"{len(banks)} bank(s)", "horizontal federation needs at least 2 banks"
        )
    workdir = Path(workdir)
    rows = {
        b: {s: pd.Index(t.ids).get_indexer(ids) for s, ids in splits[b].items()} for b, t in banks.items()
    }
    dirs = {}
    for name, bank in banks.items():
        train_path, val_path = bank_files(workdir / "parties" / name)
        write_party_table(bank.take(rows[name]["train"]), train_path)
        write_party_table(bank.take(rows[name]["val"]), val_path)
        dirs[name] = train_path.parent
    out_dir = workdir / "server"
    run_federation(
        server_app,
        client_app,
        dirs,
        {"output-dir": str(out_dir), PARAMS_KEY: json.dumps(params.__dict__)},
        backend,
    )
    marker = read_completion(out_dir)
    info = json.loads((out_dir / INFO_FILE).read_text())
    with np.load(out_dir / MODEL_FILE) as data:
        arrays = {k: data[k] for k in data.files}
    model = GBDTModel(unpack_trees(arrays), np.float32(arrays["base"]), params.max_bins)
    binner = Binner.from_dict(info["bins"])
    bytes_sent = int(marker.get("bytes", 0))
    return GrownForest(model, binner, info, bytes_sent, rows, time.perf_counter() - started)


def run_gbdt_horizontal(
    banks: Mapping[str, PartyTable],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    params: GBDTParams,
    backend,
    workdir: Path,
) -> MethodOutcome:
    """Grow one booster across the banks; score each bank's held-out applicants with it."""
    forest = grow_gbdt_horizontal(banks, splits, params, backend, workdir)
    rows = forest.rows

    def score(bank: PartyTable, positions: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-forest.margin(bank, positions).astype(np.float64)))

    scores = {
        ScoreKey(name, s): ScoredSet(np.asarray(splits[name][s]), bank.label[r], score(bank, r))
        for name, bank in banks.items()
        for s, r in rows[name].items()
        if s != "train"
    }
    train_scores = np.concatenate([score(bank, rows[name]["train"]) for name, bank in banks.items()])
    info = forest.info
    extra = {"round_trips": info["round_trips"], "setup_seconds": info["setup_seconds"]}
    return MethodOutcome(
        "federated",
        scores,
        history=info["history"],
        cost=forest.cost(),
        train_scores=train_scores,
        extra=extra,
    )
