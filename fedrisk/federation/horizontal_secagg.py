"""SecAgg+ for horizontal federation: the one module where fedrisk uses Flower's legacy (compat) API.

Why it exists: Flower 1.41 implements SecAgg+ only on its legacy API -- the server's ``SecAggPlusWorkflow``
drives a legacy ``Strategy`` (``configure_fit``/``aggregate_fit`` with ``FitIns``/``FitRes``) and the
client's ``secaggplus_mod`` wraps legacy ``FitIns``/``FitRes`` records; the Message API has no secure
aggregation yet. Everything else in horizontal federation is Message API, so this module adapts, in both
directions and nowhere else:

- server: `secagg_fit_round` runs one ``SecAggPlusWorkflow`` round with `LegacyStrategyView`, a legacy
  face on the run's Message-API strategy: the strategy's own ``configure_train`` picks the banks and
  builds their instructions, and its own ``aggregate_train`` (FedAvg, FedProx, FedAdam, ..., and Flower's
  DP wrappers) receives the unmasked weighted mean. The same strategy object runs the evaluation rounds.
- client: `secagg_train` is the ``train`` handler under ``secaggplus_mod``: it turns the ``FitIns`` record
  into the Message-API ``train`` message, runs the statistics or the training step (with their mods), and
  turns the reply back into ``FitRes``.

When Flower ships SecAgg+ for the Message API this module goes, and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.client.mod import make_ffn, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import (
    Code,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedrisk.config.horizontal import HorizontalJob
from fedrisk.core.errors import FedriskError
from fedrisk.protocol.horizontal import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY, STATS_TASK, TASK_KEY, WEIGHT_KEY


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


# --- server ----------------------------------------------------------------------------------------------


class LegacyStrategyView(LegacyStrategy):
    """A Message-API strategy seen through the legacy interface ``SecAggPlusWorkflow`` calls.

    Only ``configure_fit`` and ``aggregate_fit`` are used (the workflow's fit stages); the result of the
    wrapped strategy's ``aggregate_train`` is kept in `result`, with the array names of the global model.
    """

    def __init__(self, strategy: Strategy, grid: Grid, arrays: ArrayRecord, config: ConfigRecord) -> None:
        super().__init__()
        self.strategy = strategy
        self.grid = grid
        self.names = list(arrays.keys())
        self.arrays = arrays
        self.config = config
        self.result: tuple[ArrayRecord | None, MetricRecord | None] = (None, None)
        self.n_results = 0

    def _named(self, arrays: list[np.ndarray]) -> ArrayRecord:
        return ArrayRecord({k: Array(np.asarray(a)) for k, a in zip(self.names, arrays, strict=True)})

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        messages = self.strategy.configure_train(server_round, self.arrays, self.config, self.grid)
        run_id = self.grid.run.run_id
        out = []
        for msg in messages:
            config = dict(msg.content[CONFIG_KEY])
            params = ndarrays_to_parameters(msg.content[ARRAYS_KEY].to_numpy_ndarrays())
            out.append((GridClientProxy(msg.metadata.dst_node_id, self.grid, run_id), FitIns(params, config)))
        return out

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if failures:  # RecordingGrid raises first; this covers a grid that does not
            raise RuntimeError(
                f"round {server_round}: {len(failures)} SecAgg+ client(s) failed: {failures[0]!r}"
            )
        # Every FitRes carries the unmasked weighted mean (SecAgg+ reveals nothing else) and its bank's weight
        replies = []
        for proxy, res in results:
            content = RecordDict(
                {
                    ARRAYS_KEY: self._named(parameters_to_ndarrays(res.parameters)),
                    METRICS_KEY: MetricRecord({**res.metrics, WEIGHT_KEY: res.num_examples}),  # type: ignore[dict-item]
                }
            )
            replies.append(Message(content, dst_node_id=int(proxy.node_id), message_type=MessageType.TRAIN))
        self.result = self.strategy.aggregate_train(server_round, replies)
        self.n_results = len(replies)
        arrays = self.result[0]
        return (ndarrays_to_parameters(arrays.to_numpy_ndarrays()) if arrays else None), {}

    # --- not used by the fit workflow ---------------------------------------------------------------
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return None


def secagg_fit_round(
    grid: Grid,
    context: Context,
    strategy: Strategy,
    server_round: int,
    arrays: ArrayRecord,
    config: ConfigRecord,
    workflow: SecAggPlusWorkflow,
) -> tuple[ArrayRecord | None, MetricRecord | None, int]:
    """One training (or statistics) round of ``strategy`` with the banks' replies summed under SecAgg+.

    Returns what ``strategy.aggregate_train`` returned, like a plain round's
    ``strategy.aggregate_train(server_round, grid.send_and_receive(strategy.configure_train(...)))``,
    and how many banks' replies went into it.
    """
    view = LegacyStrategyView(strategy, grid, arrays, config)
    scratch = Context(
        run_id=context.run_id, node_id=context.node_id, node_config={}, state=RecordDict(), run_config={}
    )
    legacy = LegacyContext(context=scratch, config=ServerConfig(num_rounds=server_round), strategy=view)
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: server_round})
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(arrays.to_numpy_ndarrays()), keep_input=True
    )
    workflow(grid, legacy)
    return (*view.result, view.n_results)


def secagg_workflow(job: HorizontalJob, n_banks: int, stats: bool = False) -> SecAggPlusWorkflow:
    """Flower's ``SecAggPlusWorkflow`` with the section's settings.

    ``stats``: the statistics round (moments in [0, 1], weights up to the largest bank's rows, as fine a
    quantisation as the modulus allows); otherwise the section's clipping and quantisation ranges.

    Raises
    ------
    FedriskError
        ``modulus_range`` cannot hold the sum of ``n_banks`` quantised updates (it would wrap silently).
    """
    secagg = job.horizontal.secagg
    quantization = (
        stats_quantization_range(secagg.modulus_range, n_banks) if stats else secagg.quantization_range
    )
    if (n_banks + 1) * quantization > secagg.modulus_range:
        raise FedriskError(
            "federation.horizontal.secagg.modulus_range",
            f"{secagg.modulus_range} cannot hold the sum of {n_banks} updates quantised to {quantization} levels",
            f"use a power of two above {(n_banks + 1) * quantization} (or fewer quantization levels)",
        )
    return SecAggPlusWorkflow(
        num_shares=secagg.num_shares,
        reconstruction_threshold=secagg.reconstruction_threshold,
        max_weight=float(job.max_rows) if stats else job.max_weight,
        clipping_range=1.0 if stats else secagg.clipping_range,
        quantization_range=quantization,
        modulus_range=secagg.modulus_range,
        timeout=secagg.timeout,
    )


def secagg_fit(
    grid: Grid, context: Context, job: HorizontalJob, n_banks: int, stats: bool = False
) -> Callable[
    [Strategy, int, ArrayRecord, ConfigRecord], tuple[ArrayRecord | None, MetricRecord | None, int]
]:
    """The ServerApp's round function under SecAgg+ (`fedrisk.federation.horizontal_server.FitRound`)."""
    workflow = secagg_workflow(job, n_banks, stats)

    def fit(strategy: Strategy, rnd: int, arrays: ArrayRecord, config: ConfigRecord):
        return secagg_fit_round(grid, context, strategy, rnd, arrays, config, workflow)

    return fit


# --- client ----------------------------------------------------------------------------------------------


def add_secagg_train(
    app: ClientApp, stats: ClientAppCallable, train: ClientAppCallable, train_mods: Sequence[Mod]
) -> None:
    """Register the bank's ``train`` handler behind Flower's ``secaggplus_mod`` (`secagg_train`)."""
    app.train(mods=[secaggplus_mod])(secagg_train(stats, train, train_mods))


def secagg_train(
    stats: ClientAppCallable, train: ClientAppCallable, train_mods: Sequence[Mod]
) -> ClientAppCallable:
    """The bank's ``train`` handler under ``secaggplus_mod``: legacy ``FitIns`` in, legacy ``FitRes`` out.

    ``config.task = "stats"`` selects the statistics step (every SecAgg+ message is a plain ``train``, so
    the action cannot); otherwise the training step runs behind ``train_mods`` (attacks, DP clipping).
    Array names are positions ("0", "1", ...): the legacy record carries none, and the steps answer under
    the names they were sent.
    """
    train_chain = make_ffn(train, list(train_mods))

    def handler(msg: Message, context: Context) -> Message:
        fit_ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        arrays = parameters_to_ndarrays(fit_ins.parameters)
        msg.content = RecordDict(
            {
                ARRAYS_KEY: ArrayRecord({str(i): Array(np.asarray(a)) for i, a in enumerate(arrays)}),
                CONFIG_KEY: ConfigRecord(dict(fit_ins.config)),  # type: ignore[arg-type]
            }
        )
        step = stats if fit_ins.config.get(TASK_KEY) == STATS_TASK else train_chain
        reply = step(msg, context)
        if reply.has_error():
            return reply
        metrics = dict(reply.content[METRICS_KEY])
        weight = int(metrics.pop(WEIGHT_KEY))
        params = ndarrays_to_parameters(reply.content[ARRAYS_KEY].to_numpy_ndarrays())
        fit_res = FitRes(Status(Code.OK, ""), params, weight, metrics)  # type: ignore[arg-type]
        reply.content = compat.fitres_to_recorddict(fit_res, keep_input=True)
        return reply

    return handler
