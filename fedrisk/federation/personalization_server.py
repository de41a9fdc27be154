"""The ServerApp of the personalisation phase (Flower Message API), run after the global federation.

It starts from the kept global model and the shared encoder of the global run (files the server itself
wrote) and, in order:

1. sends the encoder once (``query.prep``);
2. ``clustered`` only: asks every bank for its update from the global model (``query.update``), clusters
   the banks by the cosine distance of their updates (scikit-learn's agglomerative clustering; the number
   of clusters by silhouette when ``auto``) and runs Flower's ``FedAvg`` strategy within each cluster on
   a grid that shows it only that cluster's nodes, keeping the round with the lowest validation loss;
3. asks every bank to build and keep its personal model (``train.personalize``) and collects the reports.

What it learns is written to ``output-dir/personal_history.json``; the personal models stay with the banks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import silhouette_score

from fedrisk.config.horizontal import HorizontalJob
from fedrisk.config.personalization import PersonalConfig
from fedrisk.federation.grids import DelegatingGrid
from fedrisk.federation.horizontal_server import PREP_FILE, load_global_model
from fedrisk.federation.personalization import (
    ARRAYS,
    CANDIDATE,
    CONFIG,
    DIGEST_KEY,
    GLOBAL,
    MODE_KEY,
    PREP_KEY,
    REPORT,
)
from fedrisk.protocol.federated_stats import FederatedPreprocessor

HISTORY_FILE = "personal_history.json"
GLOBAL_DIR_KEY = "global-dir"
"""Run-config key: the directory where the global run's server wrote its model and encoder."""
MIN_SILHOUETTE = 0.1
"""Below this silhouette no split of the banks is clear enough: ``auto`` keeps one cluster."""
MIN_SPLIT_DISTANCE = 0.5
"""Nor when banks of different clusters still point the same way (mean cosine distance below this)."""


class SubsetGrid(DelegatingGrid):
    """The grid as one cluster sees it: only its nodes exist, so Flower's strategy samples among them."""

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        super().__init__(grid)
        self._nodes = sorted(node_ids)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._nodes)


def _ask(grid: Grid, node_ids: list[int], message_type: str, content: RecordDict) -> dict[int, Message]:
    messages = [Message(content=content, message_type=message_type, dst_node_id=n) for n in node_ids]
    replies = list(grid.send_and_receive(messages))
    failed = [r for r in replies if r.has_error()]
    if failed or len(replies) != len(node_ids):
        reason = failed[0].error.reason if failed else "missing replies"
        raise RuntimeError(f"{message_type}: {len(failed)} failure(s) of {len(node_ids)} banks ({reason})")
    return {r.metadata.src_node_id: r for r in replies}


def cluster_banks(
    updates: dict[int, np.ndarray], personal: PersonalConfig
) -> tuple[dict[int, int], float | None]:
    """Cluster label per node from the cosine distance of the banks' updates, and the silhouette used."""
    nodes = sorted(updates)
    if len(nodes) < 3 or personal.clusters == 1 or personal.max_clusters == 1:
        return dict.fromkeys(nodes, 0), None
    vectors = np.stack([updates[n] / max(float(np.linalg.norm(updates[n])), 1e-12) for n in nodes])
    distance = np.clip(1.0 - vectors @ vectors.T, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)

    def labels_for(k: int) -> np.ndarray:
        return AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average").fit_predict(
            distance
        )

    if personal.clusters != "auto":
        k = min(int(personal.clusters), len(nodes))
        labels = labels_for(k)
        score = (
            float(silhouette_score(distance, labels, metric="precomputed")) if 1 < k < len(nodes) else None
        )
        return dict(zip(nodes, labels.tolist(), strict=True)), score
    best_labels, best_score = np.zeros(len(nodes), dtype=int), None
    for k in range(2, min(personal.max_clusters, len(nodes) - 1) + 1):
        labels = labels_for(k)
        score = float(silhouette_score(distance, labels, metric="precomputed"))
        if best_score is None or score > best_score:
            best_labels, best_score = labels, score
    apart = distance[best_labels[:, None] != best_labels[None, :]]
    if best_score is None or best_score < MIN_SILHOUETTE or apart.mean() < MIN_SPLIT_DISTANCE:
        best_labels = np.zeros(len(nodes), dtype=int)
    return dict(zip(nodes, best_labels.tolist(), strict=True)), best_score


def cluster_model(
    grid: Grid, members: list[int], start: ArrayRecord, rounds: int, config: ConfigRecord
) -> tuple[ArrayRecord, int, list[dict]]:
    """Flower's FedAvg among ``members`` from ``start``; the round with the lowest validation loss."""
    kept: dict[int, ArrayRecord] = {}

    def remember(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        kept[server_round] = arrays  # the per-round models Flower's Result does not keep
        return None

    n = len(members)
    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=n,
        min_evaluate_nodes=n,
        min_available_nodes=n,
    )
    result = strategy.start(
        grid=SubsetGrid(grid, members),
        initial_arrays=start,
        num_rounds=rounds,
        train_config=ConfigRecord(dict(config)),
        evaluate_config=ConfigRecord(dict(config)),
        evaluate_fn=remember,
    )
    losses = {
        r: float(m["val_loss"]) for r, m in result.evaluate_metrics_clientapp.items() if "val_loss" in m
    }
    best = min(losses, key=losses.get) if losses else max(kept)
    history = [{"round": r, "val_loss": losses.get(r)} for r in sorted(kept) if r > 0]
    return kept[best], best, history


def build_personal_server_app() -> ServerApp:
    """The personalisation phase's ServerApp; its settings come from the run config (`HorizontalJob`)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        started = time.perf_counter()
        job = HorizontalJob.from_run_config(context.run_config)
        out_dir = Path(str(context.run_config["output-dir"]))
        global_dir = Path(str(context.run_config[GLOBAL_DIR_KEY]))
        prep_json = (global_dir / PREP_FILE).read_text()
        digest = FederatedPreprocessor.from_json(prep_json).digest
        start = ArrayRecord(load_global_model(global_dir))
        config = ConfigRecord({DIGEST_KEY: digest})
        node_ids = sorted(grid.get_node_ids())
        prep_replies = _ask(
            grid, node_ids, "query.prep", RecordDict({CONFIG: ConfigRecord({PREP_KEY: prep_json})})
        )
        names = {n: str(r.content.config_records[REPORT]["party"]) for n, r in prep_replies.items()}

        mode = job.horizontal.personalization
        candidates: dict[int, ArrayRecord] = {}
        clusters: dict[int, int] = {}
        silhouette, cluster_info = None, []
        if mode == "clustered":
            replies = _ask(grid, node_ids, "query.update", RecordDict({GLOBAL: start, CONFIG: config}))
            updates = {
                n: np.concatenate([a.ravel() for a in r.content.array_records[ARRAYS].to_numpy_ndarrays()])
                for n, r in replies.items()
            }
            clusters, silhouette = cluster_banks(updates, job.horizontal.personal)
            for label in sorted(set(clusters.values())):
                members = [n for n in node_ids if clusters[n] == label]
                arrays, kept_round, rounds = cluster_model(
                    grid, members, start, job.horizontal.personal.cluster_rounds, config
                )
                candidates.update(dict.fromkeys(members, arrays))
                cluster_info.append(
                    {
                        "cluster": label,
                        "banks": [names[n] for n in members],
                        "kept_round": kept_round,
                        "rounds": rounds,
                    }
                )
        messages = []
        for n in node_ids:
            content = RecordDict(
                {
                    GLOBAL: start,
                    CONFIG: ConfigRecord({DIGEST_KEY: digest, MODE_KEY: "adopt" if candidates else mode}),
                }
            )
            if n in candidates:
                content[CANDIDATE] = candidates[n]
            messages.append(Message(content=content, message_type="train.personalize", dst_node_id=n))
        replies = list(grid.send_and_receive(messages))
        failed = [r for r in replies if r.has_error()]
        if failed or len(replies) != len(node_ids):
            raise RuntimeError(
                f"train.personalize: {len(failed)} failure(s) ({failed[0].error.reason if failed else ''})"
            )
        reports = {}
        for r in replies:
            record = r.content.config_records[REPORT]
            report = {k: v for k, v in record.items() if k != "party"}
            if clusters:
                report["cluster"] = clusters[r.metadata.src_node_id]
            reports[str(record["party"])] = report
        history = {
            "mode": mode,
            "reports": dict(sorted(reports.items())),
            "clusters": cluster_info,
            "silhouette": silhouette,
            "seconds": time.perf_counter() - started,
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / HISTORY_FILE).write_text(json.dumps(history, indent=1))

    return app
