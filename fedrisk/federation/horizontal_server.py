"""The horizontal ServerApp on Flower's Message API: Flower's strategies, DP wrappers and SecAgg+ set up by name.

The run has three phases, all through the (recorded) grid:

1. ``query.schema`` to every bank, merged by `fedrisk.protocol.federated_stats`;
2. one statistics round (``train.stats``): the banks' moment vectors averaged by Flower's FedAvg
   (row-weighted; summed under SecAgg+ when enabled), giving the shared `FederatedPreprocessor`, which
   ``query.prep`` then gives every bank once;
3. training: the registry's Message-API strategy (`fedrisk.federation.strategies.build_strategy`, wrapped
   in Flower's DP wrapper for the configured mode), one ``train`` and one ``evaluate`` exchange per round.

Aggregation, clipping, noise and secure aggregation are Flower's. The round loop is `run_rounds`, not
Flower's ``Strategy.start``: that runs a fixed number of rounds and sends ``train`` in one exchange, while
fedrisk stops early on the federated validation loss (``training.patience``), keeps every round's model
(``keep = "best"``) and, under SecAgg+, runs each ``train`` as Flower's four-stage SecAgg+ workflow. The
ServerApp records what the runner needs (per-round history, the kept global model, the encoder) as files
in ``output-dir``: the driver reads nothing else.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Strategy

from fedrisk.config.horizontal import HorizontalJob
from fedrisk.core.progress import report
from fedrisk.federation.horizontal_secagg import secagg_fit
from fedrisk.federation.strategies import build_strategy
from fedrisk.models.nets import make_model
from fedrisk.models.training import EarlyStopping
from fedrisk.protocol.federated_stats import FederatedPreprocessor, merge_schemas, moments_length
from fedrisk.protocol.horizontal import (
    CONFIG_KEY,
    MOMENTS_KEY,
    PREP_ACTION,
    PREP_DIGEST_KEY,
    PREP_KEY,
    SCHEMA_ACTION,
    SCHEMA_KEY,
    STATS_ACTION,
    STATS_TASK,
    TASK_KEY,
    WEIGHT_KEY,
)

HISTORY_FILE = "horizontal_history.json"
MODEL_FILE = "global_model.npz"
ROUNDS_FILE = "round_models.npz"
PREP_FILE = "preprocessor.json"

FitRound = Callable[
    [Strategy, int, ArrayRecord, ConfigRecord], tuple[ArrayRecord | None, MetricRecord | None, int]
]
"""``(strategy, round, global arrays, config) -> (aggregated arrays, train metrics, banks that trained)``."""


def initial_arrays(job: HorizontalJob, n_features: int) -> ArrayRecord:
    """The global model's starting point: the same seeded initialisation as the baselines' ``make_model``."""
    torch.manual_seed(job.seed)
    return ArrayRecord(make_model(job.model_kind, n_features, job.hidden, job.dropout).state_dict())


# --- exchanges -------------------------------------------------------------------------------------------


def _exchange(grid: Grid, messages: Iterable[Message], group: int) -> list[Message]:
    """Send and wait for every reply (`RecordingGrid` raises on an error reply or a missing one)."""
    messages = list(messages)
    for msg in messages:
        msg.metadata.group_id = str(group)  # the message log's round
    replies = list(grid.send_and_receive(messages))
    failed = [r for r in replies if r.has_error()]
    if failed or len(replies) != len(messages):
        reason = failed[0].error.reason if failed else "missing replies"
        raise RuntimeError(f"{len(replies) - len(failed)} of {len(messages)} banks answered ({reason})")
    return replies


def _ask(grid: Grid, node_ids: list[int], message_type: str, config: dict) -> dict[int, ConfigRecord]:
    messages = [
        Message(RecordDict({CONFIG_KEY: ConfigRecord(config)}), dst_node_id=nid, message_type=message_type)
        for nid in node_ids
    ]
    return {r.metadata.src_node_id: r.content[CONFIG_KEY] for r in _exchange(grid, messages, 0)}


def query_schemas(grid: Grid, node_ids: list[int]) -> dict[int, dict]:
    """Phase 1: every bank's schema."""
    replies = _ask(grid, node_ids, f"query.{SCHEMA_ACTION}", {})
    return {node: json.loads(str(record[SCHEMA_KEY])) for node, record in replies.items()}


def send_preprocessor(grid: Grid, node_ids: list[int], prep: FederatedPreprocessor) -> None:
    """Give every bank the shared encoder once; training messages then name it by digest."""
    replies = _ask(grid, node_ids, f"query.{PREP_ACTION}", {PREP_KEY: prep.to_json()})
    wrong = [node for node, record in replies.items() if record.get(PREP_DIGEST_KEY) != prep.digest]
    if wrong:
        raise RuntimeError(f"nodes {wrong} did not store the shared encoder")


def plain_fit(grid: Grid) -> FitRound:
    """A training round as Flower's ``Strategy.start`` runs it: configure, one exchange, aggregate."""

    def fit(strategy: Strategy, rnd: int, arrays: ArrayRecord, config: ConfigRecord):
        replies = _exchange(grid, strategy.configure_train(rnd, arrays, config, grid), rnd)
        return (*strategy.aggregate_train(rnd, replies), len(replies))

    return fit


def run_stats_round(
    grid: Grid, context: Context, job: HorizontalJob, schema: dict, node_ids: list[int]
) -> np.ndarray:
    """Phase 2: Flower's FedAvg (row-weighted) of the banks' moment vectors, under SecAgg+ if enabled."""
    n = len(node_ids)
    fedavg = FedAvg(fraction_train=1.0, min_train_nodes=n, min_available_nodes=n, weighted_by_key=WEIGHT_KEY)
    config = ConfigRecord({TASK_KEY: STATS_TASK, SCHEMA_KEY: json.dumps(schema)})
    if job.horizontal.secagg.enabled:  # every SecAgg+ message is a plain ``train``: the task names the step
        zeros = ArrayRecord({MOMENTS_KEY: Array(np.zeros(moments_length(schema)))})
        pooled, _, _ = secagg_fit(grid, context, job, n, stats=True)(fedavg, 0, zeros, config)
    else:
        messages = [
            Message(RecordDict({CONFIG_KEY: config}), dst_node_id=nid, message_type=f"train.{STATS_ACTION}")
            for nid in node_ids
        ]
        pooled, _ = fedavg.aggregate_train(0, _exchange(grid, messages, 0))
    if pooled is None:
        raise RuntimeError("the statistics round produced no aggregate")
    return pooled.to_numpy_ndarrays()[0]


# --- training rounds -------------------------------------------------------------------------------------


@dataclass
class RoundLog:
    """Per-round metrics and global models of a training run."""

    rounds: dict[int, dict] = field(default_factory=dict)
    params: dict[int, list[np.ndarray]] = field(default_factory=dict)
    stopped: str = "rounds"

    def kept_round(self, keep: str) -> int:
        """The round whose model is kept: lowest federated validation loss, or the last."""
        if not self.params:
            raise RuntimeError("no round produced a global model")
        if keep == "best":
            scored = [(r["val_loss"], n) for n, r in self.rounds.items() if r.get("val_loss") is not None]
            scored = [(loss, n) for loss, n in scored if n in self.params and math.isfinite(loss)]
            if scored:
                return min(scored)[1]
        return max(self.params)


def run_rounds(
    grid: Grid,
    strategy: Strategy,
    arrays: ArrayRecord,
    rounds: int,
    config: dict,
    fit: FitRound,
    stopping: EarlyStopping | None = None,
    started: float | None = None,
) -> RoundLog:
    """``rounds`` rounds of ``fit`` then federated evaluation, until ``stopping`` (the training routine's
    early stopping, counted in rounds) sees no federated validation-loss improvement for long enough."""
    started = time.perf_counter() if started is None else started
    log = RoundLog()
    for rnd in range(1, rounds + 1):
        new, train_metrics, n_clients = fit(strategy, rnd, arrays, ConfigRecord(dict(config)))
        if new is None:
            raise RuntimeError(f"round {rnd}: {strategy!r} produced no model")
        arrays = new
        log.params[rnd] = arrays.to_numpy_ndarrays()
        report("round", rnd, rounds)
        row: dict = {
            "round": rnd,
            "clients": n_clients,
            "train_loss": (train_metrics or {}).get("train_loss"),
        }
        evaluation = strategy.configure_evaluate(rnd, arrays, ConfigRecord(dict(config)), grid)
        val = strategy.aggregate_evaluate(rnd, _exchange(grid, evaluation, rnd)) or {}
        row["val_loss"] = val.get("loss")
        row.update({f"val_{k}": v for k, v in val.items() if k != "loss"})
        recording = getattr(grid, "log", None)
        row["bytes_cumulative"] = recording.bytes_sent() if recording is not None else None
        row["seconds"] = time.perf_counter() - started
        log.rounds[rnd] = row
        loss = row["val_loss"]
        if stopping is not None and stopping.update(rnd, loss if loss is not None else math.inf)[1]:
            log.stopped = "patience"
            break
    return log


def run_training(
    grid: Grid,
    context: Context,
    job: HorizontalJob,
    prep: FederatedPreprocessor,
    n_banks: int,
    started: float,
) -> RoundLog:
    """Phase 3: the configured strategy for ``rounds`` (or until ``training.patience`` runs out)."""
    rounds, patience = job.horizontal.rounds_budget(job.train)
    fit = secagg_fit(grid, context, job, n_banks) if job.horizontal.secagg.enabled else plain_fit(grid)
    return run_rounds(
        grid,
        build_strategy(job, n_banks),
        initial_arrays(job, prep.n_features_out_),
        rounds,
        {PREP_DIGEST_KEY: prep.digest},
        fit,
        EarlyStopping(job.train.model_copy(update={"patience": patience})),
        started,
    )


def build_server_app() -> ServerApp:
    """The horizontal ServerApp; everything it needs comes from the run config (`HorizontalJob`)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        started = time.perf_counter()
        job = HorizontalJob.from_run_config(context.run_config)
        out_dir = Path(str(context.run_config["output-dir"]))
        # Flower samples nodes with `random` and draws DP noise and SecAgg+ rounding with `np.random`.
        random.seed(job.seed)
        np.random.seed(job.seed % 2**32)
        node_ids = sorted(grid.get_node_ids())
        schema = merge_schemas({str(k): v for k, v in query_schemas(grid, node_ids).items()})
        pooled = run_stats_round(grid, context, job, schema, node_ids)
        prep = FederatedPreprocessor.from_moments(pooled, schema, job.horizontal.max_categories)
        send_preprocessor(grid, node_ids, prep)
        recording = getattr(grid, "log", None)
        stats_bytes = recording.bytes_sent() if recording is not None else None
        stats_seconds = time.perf_counter() - started
        log = run_training(grid, context, job, prep, len(node_ids), started)
        kept = log.kept_round(job.horizontal.keep)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(out_dir / MODEL_FILE, *log.params[kept])
        np.savez(
            out_dir / ROUNDS_FILE,
            **{f"r{r}_{i}": a for r, ps in log.params.items() for i, a in enumerate(ps)},
        )
        (out_dir / PREP_FILE).write_text(prep.to_json())
        history = {
            "rounds": [log.rounds[r] for r in sorted(log.rounds)],
            "kept_round": kept,
            "stopped": log.stopped,
            "stats_bytes": stats_bytes,
            "stats_seconds": stats_seconds,
            "pooled_moments": pooled.tolist(),
            "seconds": time.perf_counter() - started,
        }
        (out_dir / HISTORY_FILE).write_text(json.dumps(history, indent=1))

    return app


def load_round_models(out_dir: str | Path) -> dict[int, list[np.ndarray]]:
    """Every round's global model as the ServerApp saved it (``{round: arrays}``)."""
    with np.load(Path(out_dir) / ROUNDS_FILE) as data:
        models: dict[int, dict[int, np.ndarray]] = {}
        for key in data.files:
            rnd, idx = key[1:].split("_")
            models.setdefault(int(rnd), {})[int(idx)] = data[key]
    return {r: [arrs[i] for i in sorted(arrs)] for r, arrs in sorted(models.items())}


def load_global_model(out_dir: str | Path) -> list[np.ndarray]:
    """The kept global model's arrays."""
    with np.load(Path(out_dir) / MODEL_FILE) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]
