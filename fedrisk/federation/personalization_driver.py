"""The personalisation driver: after a global horizontal federation, each bank gets its own model.

`run_personalization` runs the personalisation ServerApp and ClientApp (`fedrisk.federation.
personalization_server`, `fedrisk.federation.personalization`) through the same backends as the global
run, on the same bank directories (each bank's training and validation rows), then plays each bank's
scoring step: the bank scores its own held-out applicants with the personal model it kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fedrisk.config.horizontal import HorizontalJob
from fedrisk.core.errors import FedriskError
from fedrisk.data.outcome import ScoredSet, ScoreKey
from fedrisk.data.table import PartyTable
from fedrisk.federation.backends import read_completion, run_federation
from fedrisk.federation.personalization import (
    build_personal_client_app,
    load_arrays,
    load_personal_model,
    personal_encoder_path,
)
from fedrisk.federation.personalization_server import GLOBAL_DIR_KEY, HISTORY_FILE, build_personal_server_app
from fedrisk.models.nets import make_model
from fedrisk.models.training import predict_proba
from fedrisk.protocol.federated_stats import FederatedPreprocessor


@dataclass
class PersonalOutcome:
    """Every bank's personal-model scores and what the phase cost.

    Parameters
    ----------
    scores : dict
        ``ScoreKey(bank, split)`` -> `ScoredSet` of the bank's kept model on its held-out applicants.
    reports : dict
        Per bank: ``model`` ("personal" or "global"), ``fallback`` (why it could not personalise, if so),
        validation losses, fine-tuning epochs kept, cluster.
    clusters : list of dict
        ``clustered`` only: each cluster's banks and the FedAvg round kept.
    """

    scores: dict[ScoreKey, ScoredSet] = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)
    clusters: list[dict] = field(default_factory=list)
    silhouette: float | None = None
    train_scores: np.ndarray | None = None
    bytes_sent: int = 0
    seconds: float = 0.0


def run_personalization(
    banks: Mapping[str, PartyTable],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    job: HorizontalJob,
    party_dirs: Mapping[str, Path],
    global_dir: Path,
    backend,
    workdir: Path,
) -> PersonalOutcome:
    """Personalise the global model in ``global_dir`` for every bank and score each bank's test applicants.

    ``party_dirs`` are the banks' directories of the global run (each holds the bank's training and
    validation rows); each bank's personal model is written there and read back by the bank's scoring step.
    """
    started = time.perf_counter()
    out_dir = Path(workdir)
    run_federation(
        build_personal_server_app(),
        build_personal_client_app(),
        party_dirs,
        {"output-dir": str(out_dir), GLOBAL_DIR_KEY: str(global_dir), **job.to_run_config()},
        backend,
    )
    marker = read_completion(out_dir)
    history = json.loads((out_dir / HISTORY_FILE).read_text())
    scores: dict[ScoreKey, ScoredSet] = {}
    train_scores = []
    for name, bank in banks.items():
        # the bank's scoring step: its kept model and the encoder it reads (its own normalisation, if tuned)
        encoder = FederatedPreprocessor.from_json(personal_encoder_path(party_dirs[name]).read_text())
        model = make_model(job.model_kind, encoder.n_features_out_, job.hidden, job.dropout)
        load_arrays(model, load_personal_model(party_dirs[name]))
        index = pd.Index(bank.ids)
        for split, ids in splits[name].items():  # val too: approval thresholds are chosen on it
            pos = index.get_indexer(ids)
            if (pos < 0).any():
                raise FedriskError(
                    f"splits.{name}", f"{int((pos < 0).sum())} ids are not in the bank's table"
                )
            p = predict_proba(model, encoder.transform(bank.features.iloc[pos]))
            if split == "train":
                train_scores.append(p)
            else:
                scores[ScoreKey(name, split)] = ScoredSet(np.asarray(ids), bank.label[pos], p)
    return PersonalOutcome(
        scores=scores,
        reports=history["reports"],
        clusters=history["clusters"],
        silhouette=history["silhouette"],
        train_scores=np.concatenate(train_scores) if train_scores else None,
        bytes_sent=int(marker.get("bytes", 0)),
        seconds=time.perf_counter() - started,
    )
