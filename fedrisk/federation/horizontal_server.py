"""The horizontal ServerApp: Flower's own strategies, SecAgg+ workflow and DP wrappers, set up by name.

The run has three phases, all through the (recorded) grid:

1. schema query (legacy ``get_properties``) and merge -- `fedrisk.protocol.federated_stats`;
2. one statistics round: Flower's FedAvg of the banks' moment vectors, under ``SecAggPlusWorkflow``
   when SecAgg+ is on, giving the shared `FederatedPreprocessor`, which is then sent to every bank once;
3. training: ``DefaultWorkflow`` (SecAgg+ fit workflow if enabled) with the registry's strategy, wrapped
   in Flower's DP wrapper for the configured mode.

Aggregation, secure aggregation, clipping and noise are all Flower's; this module only assembles them
and records what the runner needs (per-round history, the kept global model, the encoder) as files in
``output-dir``: the driver reads nothing else.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import torch
from flwr.app import Context, Message
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetPropertiesIns,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import MessageTypeLegacy
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Strategy,
)
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import Grid, ServerApp

from fedrisk.config.horizontal import HorizontalJob
from fedrisk.core.errors import FedriskError
from fedrisk.core.progress import report
from fedrisk.federation.channel import KIND_KEY, ClientFailure
from fedrisk.federation.horizontal_client import (
    PREP_DIGEST_KEY,
    PREP_KEY,
    PREP_TASK,
    SCHEMA_KEY,
    SCHEMA_TASK,
    STATS_TASK,
    TASK_KEY,
    get_weights,
)
from fedrisk.federation.strategies import STRATEGY_CLASSES
from fedrisk.models.nets import make_model
from fedrisk.protocol.federated_stats import FederatedPreprocessor, merge_schemas, moments_length

HISTORY_FILE = "horizontal_history.json"
MODEL_FILE = "global_model.npz"
ROUNDS_FILE = "round_models.npz"
PREP_FILE = "preprocessor.json"


def initial_weights(job: HorizontalJob, n_features: int) -> list[np.ndarray]:
    """The global model's starting point: the same seeded initialisation as the baselines' ``make_model``."""
    torch.manual_seed(job.seed)
    return get_weights(make_model(job.model_kind, n_features, job.hidden, job.dropout))


def weighted_mean(metrics: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    """Clients' metrics averaged by their example counts (Flower's metrics-aggregation hook)."""
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for n, m in metrics:
        for key, value in m.items():
            if isinstance(value, int | float):
                totals[key] = totals.get(key, 0.0) + n * float(value)
                weights[key] = weights.get(key, 0.0) + n
    return {k: totals[k] / weights[k] for k in totals if weights[k] > 0}


def secagg_error_bound(
    weights: Iterable[float], clipping_range: float, quantization_range: int, max_abs_param: float
) -> float:
    """Largest per-coordinate difference between SecAgg+'s and plain FedAvg's weighted mean.

    Each client's weighted parameter is stochastically rounded to a grid of step ``2c/Q`` (error < one
    step) and its weight ``w = n/max_weight`` to a grid of step ``1/Q`` (error <= half a step, scaling
    a parameter of size <= ``max_abs_param``). Dividing the summed errors by the total weight gives
    ``k (2c + max|p|) / (Q Σw)`` for ``k`` clients.
    """
    w = np.asarray(list(weights), dtype=np.float64)
    return float(len(w) * (2.0 * clipping_range + max_abs_param) / (quantization_range * w.sum()))


def stats_quantization_range(modulus_range: int, n_clients: int) -> int:
    """Quantisation levels for the statistics round: as fine as the modulus allows without overflow.

    Moments lie in [0, 1] (clipping range 1), and the sum of ``n`` quantised vectors (plus weights)
    must stay below the modulus.
    """
    return 2 ** int(np.floor(np.log2(modulus_range / (n_clients + 1))))


# --- strategies ------------------------------------------------------------------------------------------


def build_strategy(
    job: HorizontalJob,
    n_banks: int,
    initial: list[np.ndarray],
    on_fit_config_fn: Callable[[int], dict[str, Scalar]],
    on_evaluate_config_fn: Callable[[int], dict[str, Scalar]],
) -> Strategy:
    """The registry's Flower strategy with the config's parameters, wrapped for DP when asked."""
    hcfg = job.horizontal
    if n_banks < hcfg.min_clients():
        raise FedriskError(
            "federation.horizontal.strategy",
            f"'{hcfg.strategy}' with these settings needs at least {hcfg.min_clients()} banks, got {n_banks}",
            "use more banks or another strategy",
        )
    n_fit = max(1, int(round(hcfg.fraction_fit * n_banks)))
    n_eval = max(1, int(round(hcfg.fraction_evaluate * n_banks))) if hcfg.fraction_evaluate > 0 else 0
    if hcfg.secagg.enabled and n_fit < 3:
        raise FedriskError(
            "federation.horizontal.fraction_fit",
            f"samples {n_fit} banks per round",
            "SecAgg+ needs at least 3",
        )
    strategy = STRATEGY_CLASSES[hcfg.strategy](
        fraction_fit=hcfg.fraction_fit,
        fraction_evaluate=hcfg.fraction_evaluate,
        min_fit_clients=n_fit,
        min_evaluate_clients=max(n_eval, 1),
        min_available_clients=n_banks,
        on_fit_config_fn=on_fit_config_fn,
        on_evaluate_config_fn=on_evaluate_config_fn,
        accept_failures=False,
        initial_parameters=ndarrays_to_parameters(initial),
        fit_metrics_aggregation_fn=weighted_mean,
        evaluate_metrics_aggregation_fn=weighted_mean,
        **hcfg.strategy_params,
    )
    dp = hcfg.dp
    if not dp.active:
        return strategy
    z = float(job.noise_multiplier or 0.0)
    try:
        if dp.mode == "server-fixed":
            return DifferentialPrivacyServerSideFixedClipping(strategy, z, dp.clipping_norm, n_fit)
        if dp.mode == "client-fixed":
            return DifferentialPrivacyClientSideFixedClipping(strategy, z, dp.clipping_norm, n_fit)
        adaptive = {
            "initial_clipping_norm": dp.clipping_norm,
            "target_clipped_quantile": dp.target_clipped_quantile,
            "clip_norm_lr": dp.clip_norm_lr,
            "clipped_count_stddev": dp.clipped_count_stddev,
        }
        if dp.mode == "server-adaptive":
            return DifferentialPrivacyServerSideAdaptiveClipping(strategy, z, n_fit, **adaptive)
        if dp.mode == "client-adaptive":
            return DifferentialPrivacyClientSideAdaptiveClipping(strategy, z, n_fit, **adaptive)
    except ValueError as exc:
        raise FedriskError(
            "federation.horizontal.dp",
            f"Flower's {dp.mode} DP wrapper rejects these settings ({exc})",
            "adjust clipped_count_stddev / noise_multiplier as the message says",
        ) from None
    return strategy  # "local": the noise is added by each bank's LocalDpMod


class RoundRecorder(Strategy):
    """Delegates everything to a Flower strategy; keeps each round's global model and metrics.

    Hand-written because Flower's ``History`` keeps metrics but not the per-round parameters, which the
    runner needs to keep the best round (and the SecAgg+ test needs to compare rounds).
    """

    def __init__(self, strategy: Strategy, grid: Grid, started: float) -> None:
        super().__init__()
        self.strategy = strategy
        self.grid = grid
        self.started = started
        self.rounds: dict[int, dict] = {}
        self.params: dict[int, list[np.ndarray]] = {}

    def __repr__(self) -> str:
        return f"RoundRecorder({self.strategy!r})"

    def _row(self, server_round: int) -> dict:
        return self.rounds.setdefault(server_round, {"round": server_round})

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return self.strategy.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if failures:  # RecordingGrid raises first; this covers a grid that does not
            raise RuntimeError(f"round {server_round}: {len(failures)} client(s) failed: {failures[0]!r}")
        parameters, metrics = self.strategy.aggregate_fit(server_round, results, failures)
        report("round", server_round)
        row = self._row(server_round)
        row["clients"] = len(results)
        row["train_loss"] = metrics.get("train_loss")
        if parameters is not None:
            self.params[server_round] = parameters_to_ndarrays(parameters)
        self._stamp(row)
        return parameters, metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        if failures:
            raise RuntimeError(f"round {server_round}: {len(failures)} evaluation(s) failed: {failures[0]!r}")
        loss, metrics = self.strategy.aggregate_evaluate(server_round, results, failures)
        row = self._row(server_round)
        row["val_loss"] = loss
        row.update({f"val_{k}": v for k, v in metrics.items()})
        self._stamp(row)
        return loss, metrics

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return self.strategy.evaluate(server_round, parameters)

    def _stamp(self, row: dict) -> None:
        log = getattr(self.grid, "log", None)
        row["bytes_cumulative"] = log.bytes_sent() if log is not None else None
        row["seconds"] = time.perf_counter() - self.started

    def kept_round(self, keep: str) -> int:
        """The round whose model is kept: lowest federated validation loss, or the last."""
        if not self.params:
            raise RuntimeError("no round produced a global model")
        if keep == "best":
            scored = [(r["val_loss"], n) for n, r in self.rounds.items() if r.get("val_loss") is not None]
            scored = [(loss, n) for loss, n in scored if n in self.params and np.isfinite(loss)]
            if scored:
                return min(scored)[1]
        return max(self.params)


# --- phases ----------------------------------------------------------------------------------------------


def _raise_on_error(replies: list[Message], kind: str) -> None:
    for reply in replies:
        if reply.has_error():
            node = reply.metadata.src_node_id
            raise ClientFailure(f"node {node}", node, kind, reply.error.reason or "")


def _query(grid: Grid, node_ids: list[int], config: dict[str, Scalar], kind: str) -> dict[int, dict]:
    """Send Flower's legacy ``get_properties`` to every bank; their properties by node."""
    ins = GetPropertiesIns({**config, KIND_KEY: kind})
    messages = [
        Message(
            content=compat.getpropertiesins_to_recorddict(ins),
            dst_node_id=node_id,
            message_type=MessageTypeLegacy.GET_PROPERTIES,
            group_id="0",
        )
        for node_id in node_ids
    ]
    replies = list(grid.send_and_receive(messages))
    _raise_on_error(replies, kind)
    if len(replies) != len(node_ids):
        raise RuntimeError(f"{len(replies)} of {len(node_ids)} banks answered the {kind} query")
    return {
        r.metadata.src_node_id: compat.recorddict_to_getpropertiesres(r.content).properties for r in replies
    }


def query_schemas(grid: Grid, node_ids: list[int]) -> dict[int, dict]:
    """Phase 1: every bank's schema."""
    replies = _query(grid, node_ids, {TASK_KEY: SCHEMA_TASK}, "schema")
    return {node: json.loads(str(props[SCHEMA_KEY])) for node, props in replies.items()}


def send_preprocessor(grid: Grid, node_ids: list[int], prep: FederatedPreprocessor) -> None:
    """Give every bank the shared encoder once; training messages then name it by digest."""
    replies = _query(grid, node_ids, {TASK_KEY: PREP_TASK, PREP_KEY: prep.to_json()}, "prep")
    wrong = [node for node, props in replies.items() if props.get(PREP_DIGEST_KEY) != prep.digest]
    if wrong:
        raise RuntimeError(f"nodes {wrong} did not store the shared encoder")


def run_stats_round(
    grid: Grid, context: Context, job: HorizontalJob, schema: dict, n_banks: int
) -> np.ndarray:
    """Phase 2: Flower's FedAvg (row-weighted) of the banks' moment vectors, under SecAgg+ if enabled."""
    schema_json = json.dumps(schema)
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n_banks,
        min_available_clients=n_banks,
        accept_failures=False,
        initial_parameters=ndarrays_to_parameters([np.zeros(moments_length(schema))]),
        on_fit_config_fn=lambda _: {TASK_KEY: STATS_TASK, SCHEMA_KEY: schema_json, KIND_KEY: "stats"},
        fit_metrics_aggregation_fn=weighted_mean,  # else Flower warns on every run (and breaks the progress bar)
    )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=1), strategy=strategy)
    secagg = job.horizontal.secagg
    fit_workflow = None
    if secagg.enabled:
        fit_workflow = SecAggPlusWorkflow(
            num_shares=secagg.num_shares,
            reconstruction_threshold=secagg.reconstruction_threshold,
            max_weight=float(job.max_rows),
            clipping_range=1.0,
            quantization_range=stats_quantization_range(secagg.modulus_range, n_banks),
            modulus_range=secagg.modulus_range,
            timeout=secagg.timeout,
        )
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    pooled = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    return parameters_to_ndarrays(pooled)[0]


def run_training(
    grid: Grid,
    context: Context,
    job: HorizontalJob,
    prep: FederatedPreprocessor,
    n_banks: int,
    started: float,
) -> RoundRecorder:
    """Phase 3: ``DefaultWorkflow`` over the configured strategy (SecAgg+ fit workflow when enabled)."""
    hcfg = job.horizontal
    strategy = build_strategy(
        job,
        n_banks,
        initial_weights(job, prep.n_features_out_),
        on_fit_config_fn=lambda rnd: {PREP_DIGEST_KEY: prep.digest, "round": rnd},
        on_evaluate_config_fn=lambda rnd: {PREP_DIGEST_KEY: prep.digest, "round": rnd},
    )
    recorder = RoundRecorder(strategy, grid, started)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=hcfg.rounds), strategy=recorder)
    fit_workflow = None
    if hcfg.secagg.enabled:
        fit_workflow = SecAggPlusWorkflow(
            num_shares=hcfg.secagg.num_shares,
            reconstruction_threshold=hcfg.secagg.reconstruction_threshold,
            max_weight=job.max_weight,
            clipping_range=hcfg.secagg.clipping_range,
            quantization_range=hcfg.secagg.quantization_range,
            modulus_range=hcfg.secagg.modulus_range,
            timeout=hcfg.secagg.timeout,
        )
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    return recorder


def build_server_app() -> ServerApp:
    """The horizontal ServerApp; everything it needs comes from the run config (`HorizontalJob`)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        started = time.perf_counter()
        job = HorizontalJob.from_run_config(context.run_config)
        out_dir = Path(str(context.run_config["output-dir"]))
        # Flower samples clients with `random` and draws DP noise and SecAgg+ rounding with `np.random`.
        random.seed(job.seed)
        np.random.seed(job.seed % 2**32)
        node_ids = sorted(grid.get_node_ids())
        schema = merge_schemas({str(k): v for k, v in query_schemas(grid, node_ids).items()})
        pooled = run_stats_round(grid, context, job, schema, len(node_ids))
        prep = FederatedPreprocessor.from_moments(pooled, schema, job.horizontal.max_categories)
        send_preprocessor(grid, node_ids, prep)
        log = getattr(grid, "log", None)
        stats_bytes = log.bytes_sent() if log is not None else None
        stats_seconds = time.perf_counter() - started
        recorder = run_training(grid, context, job, prep, len(node_ids), started)
        kept = recorder.kept_round(job.horizontal.keep)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(out_dir / MODEL_FILE, *recorder.params[kept])
        np.savez(
            out_dir / ROUNDS_FILE,
            **{f"r{r}_{i}": a for r, ps in recorder.params.items() for i, a in enumerate(ps)},
        )
        (out_dir / PREP_FILE).write_text(prep.to_json())
        history = {
            "rounds": [recorder.rounds[r] for r in sorted(recorder.rounds)],
            "kept_round": kept,
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
