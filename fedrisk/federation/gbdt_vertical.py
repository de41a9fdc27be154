"""Vertical gradient-boosted trees on Flower: what the runner calls for ``model.kind = "gbdt"``.

As for the split model (`fedrisk.federation.vertical`): PSI alignment first, each partner's table to its own
file, the label holder's plan to its own; then Flower runs the label holder's ServerApp
(`gbdt_vertical_server`) with one ClientApp node per partner (`gbdt_vertical_client`), in-process or under
Ray, and results come back only through files in the output directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from fedrisk.config.vertical import VerticalConfig
from fedrisk.data.table import PartyTable
from fedrisk.federation.backends import MESSAGE_LOG_FILE, OUTPUT_DIR_KEY, run_federation
from fedrisk.federation.channel import MessageLog
from fedrisk.federation.gbdt_vertical_client import app as client_app
from fedrisk.federation.gbdt_vertical_server import (
    INFO_FILE,
    KEY_BITS_KEY,
    LABEL_TABLE_KEY,
    PARAMS_KEY,
    PROTECTION_KEY,
    RESULT_FILE,
)
from fedrisk.federation.gbdt_vertical_server import app as server_app
from fedrisk.federation.nodes import write_party_table
from fedrisk.federation.vertical import VerticalOutcome, _check_inputs, _scored_sets
from fedrisk.federation.vertical_server import LABEL_HOLDER_KEY, PLAN_KEY, Plan
from fedrisk.models.gbdt import GBDTParams
from fedrisk.protocol.psi import align_parties

DEFAULT_KEY_BITS = 2048


def run_gbdt_vertical(
    parties: Mapping[str, PartyTable],
    label_holder: str,
    splits: Mapping[str, np.ndarray],
    params: GBDTParams,
    vcfg: VerticalConfig,
    backend,
    workdir: Path,
    seed: int,
) -> tuple[VerticalOutcome, dict]:
    """Align by PSI, then grow the trees on Flower; returns the outcome and the run's tree info.

    ``vcfg.protection`` chooses clear ("none") or Paillier-encrypted ("he", ``vcfg.he_key_bits`` bits)
    gradients. The info holds trees kept, per-tree seconds, encryption seconds and feature importance per
    holder (share of split gain).
    """
    started = time.perf_counter()
    applicants, labels, bounds = _check_inputs(parties, label_holder, splits, "gbdt", kinds=("gbdt",))
    partners = {name: table.ids for name, table in parties.items() if name != label_holder}
    alignment = align_parties(
        label_holder, applicants, partners, parallel=vcfg.psi_parallel, seed=seed, fpr=vcfg.psi_fpr
    )
    log = MessageLog()
    for t in alignment.transcripts:
        log.add_external(t.client, t.server, "psi.request", t.bytes_client_to_server)
        log.add_external(t.server, t.client, "psi.response", t.bytes_server_to_client)
    workdir = Path(workdir)
    out_dir = workdir / "output"
    paths = {p: write_party_table(parties[p], workdir / "parties" / f"{p}.parquet") for p in partners}
    own = write_party_table(parties[label_holder], workdir / "label_holder" / f"{label_holder}.parquet")
    plan = Plan(applicants, labels, bounds, {p: alignment.shared_ids[p] for p in partners})
    run_config = {
        OUTPUT_DIR_KEY: str(out_dir),
        PLAN_KEY: str(plan.save(workdir / "plan.npz")),
        LABEL_HOLDER_KEY: label_holder,
        LABEL_TABLE_KEY: str(own),
        PARAMS_KEY: json.dumps(params.__dict__),
        PROTECTION_KEY: vcfg.protection,
        KEY_BITS_KEY: int(vcfg.he_key_bits or DEFAULT_KEY_BITS),
    }
    run_federation(server_app, client_app, paths, run_config, backend)  # type: ignore[arg-type]

    with np.load(out_dir / RESULT_FILE) as data:
        scores = {k[len("scores.") :]: data[k] for k in data.files}
    info = json.loads((out_dir / INFO_FILE).read_text())
    log = MessageLog([*log.records, *MessageLog.from_jsonl(out_dir / MESSAGE_LOG_FILE).records])
    covered = {
        p: pd.Index(alignment.shared_ids[p]).get_indexer(applicants) >= 0 for p in partners
    }  # the label holder's view (PSI); absent firms are missing values in the trees
    sets, coverage = _scored_sets(applicants, labels, bounds, scores, covered)
    outcome = VerticalOutcome(
        scores=sets,
        coverage=coverage,
        history=info["history"],
        messages=log.summary(),
        bytes_sent=log.bytes_sent(),
        psi_seconds=alignment.seconds,
        psi_bytes=sum(t.bytes_client_to_server + t.bytes_server_to_client for t in alignment.transcripts),
        train_seconds=info["train_seconds"],
        wall_seconds=time.perf_counter() - started,
        train_scores=scores.get("train"),
        best_epoch=info["trees"],
        round_trips=info["round_trips"],
    )
    return outcome, info
