"""A bank's Flower ClientApp for horizontal federation, on Flower's Message API.

Each bank reads only its own training and validation rows (the directory its node config points to;
test applicants never reach the ClientApp) and answers five messages:

- ``query.schema``: its columns, levels and magnitude bounds (`fedrisk.protocol.federated_stats.local_schema`);
- ``train.stats``: its preprocessing moments vector, weighted by its row count;
- ``query.prep``: the shared encoder, kept in the node's ``context.state`` (later messages name it by
  digest, so it crosses the wire once, not every round);
- ``train`` (the strategy's round): `local_train` from the global model, FedProx's proximal term when the
  strategy sends ``proximal-mu``;
- ``evaluate``: `local_evaluate`, loss and KS of the global model on its own validation rows.

Flower's mods do the rest, on the ``train`` handler only (the statistics round is another action, so no
DP mod ever clips the moments): the clipping mods and ``LocalDpMod`` clip (and noise) the update. Under DP
every bank reports weight 1 and no training metrics, because Flower's DP noise is calibrated to an
unweighted mean and metrics are not noised. SecAgg+ (legacy-only in Flower 1.41) is plugged in by
`fedrisk.federation.horizontal_secagg`.

`local_train` and `local_evaluate` are the per-bank steps: a personalised method wraps or replaces them.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import LocalDpMod, adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import Mod
from torch import nn

from fedrisk.config.horizontal import HorizontalJob
from fedrisk.core.metrics import ks_statistic
from fedrisk.federation.nodes import read_party_table, resolve_party
from fedrisk.models.nets import make_model
from fedrisk.models.training import bce, make_optimizer, predict_logits, run_epochs
from fedrisk.protocol.federated_stats import FederatedPreprocessor, local_moments, local_schema
from fedrisk.protocol.horizontal import (
    ARRAYS_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    MOMENTS_KEY,
    PREP_ACTION,
    PREP_DIGEST_KEY,
    PREP_KEY,
    PROXIMAL_MU_KEY,
    ROUND_KEY,
    SCHEMA_ACTION,
    SCHEMA_KEY,
    STATS_ACTION,
    WEIGHT_KEY,
)

TRAIN_FILE = "train.parquet"
VAL_FILE = "val.parquet"
_STATE_RECORD = "fedrisk.horizontal"


def bank_files(data_dir: str | Path) -> tuple[Path, Path]:
    """Where a bank's training and validation tables live inside its data directory."""
    data_dir = Path(data_dir)
    return data_dir / TRAIN_FILE, data_dir / VAL_FILE


def get_weights(model: nn.Module) -> list[np.ndarray]:
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    """Load arrays in ``state_dict`` order (positional: SecAgg+'s legacy records carry no names)."""
    keys = list(model.state_dict())
    if len(keys) != len(weights):
        raise ValueError(f"model has {len(keys)} tensors, received {len(weights)}")
    model.load_state_dict({k: torch.as_tensor(np.asarray(w)) for k, w in zip(keys, weights, strict=True)})


@dataclass
class Encoded:
    """A bank's rows through the shared encoder."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray


# Encoded rows per (bank directory, encoder digest): a bank encodes its rows once per run, not per round.
_encoded: dict[str, tuple[str, Encoded]] = {}
_encoded_lock = threading.Lock()


def encoded_rows(data_dir: Path, prep: FederatedPreprocessor) -> Encoded:
    """The bank's training and validation rows, encoded with ``prep`` (cached per directory and digest)."""
    key, digest = str(Path(data_dir).resolve()), prep.digest
    with _encoded_lock:
        hit = _encoded.get(key)
        if hit is not None and hit[0] == digest:
            return hit[1]
    train_path, val_path = bank_files(data_dir)
    train, val = read_party_table(train_path), read_party_table(val_path)
    rows = Encoded(
        prep.transform(train.features),
        np.asarray(train.label, dtype=np.float32),
        prep.transform(val.features),
        np.asarray(val.label, dtype=np.float32),
    )
    with _encoded_lock:
        _encoded[key] = (digest, rows)
    return rows


def clear_encoded_cache() -> None:
    """Forget encoded rows (tests; long-lived processes)."""
    with _encoded_lock:
        _encoded.clear()


def _proximal_term(model: nn.Module, mu: float) -> Callable[[nn.Module], torch.Tensor]:
    """FedProx's (mu/2)·||w − w_global||² (Li et al. 2020): Flower's FedProx sends ``proximal-mu`` and
    leaves the term to the client's training loop, so it is written here."""
    anchor = [p.detach().clone() for p in model.parameters()]

    def term(m: nn.Module) -> torch.Tensor:
        return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(m.parameters(), anchor, strict=True))

    return term


# --- the per-bank steps (hook points) --------------------------------------------------------------------


def local_train(
    model: nn.Module, rows: Encoded, job: HorizontalJob, config: ConfigRecord, bank: str
) -> float:
    """``local_epochs`` of the shared training routine on the bank's rows, in place; the mean loss."""
    mu = float(config.get(PROXIMAL_MU_KEY, 0.0))
    rng = np.random.default_rng([job.seed, int(config.get(ROUND_KEY, 0)), zlib.crc32(bank.encode())])
    return run_epochs(
        model,
        rows.X_train,
        rows.y_train,
        job.horizontal.local_epochs,
        job.train.batch_size,
        make_optimizer(model, job.train),
        rng,
        loss_hook=_proximal_term(model, mu) if mu > 0 else None,
    )


def local_evaluate(model: nn.Module, rows: Encoded) -> dict[str, float]:
    """Loss and KS (NaN with one class) of ``model`` on the bank's validation rows."""
    logits = predict_logits(model, rows.X_val)
    y = rows.y_val
    ks = ks_statistic(y, logits) if 0 < y.sum() < len(y) else float("nan")
    return {"loss": bce(y, logits), "ks": ks}


# --- message handlers ------------------------------------------------------------------------------------


def _job(context: Context) -> HorizontalJob:
    return HorizontalJob.from_run_config(context.run_config)


def _shared_encoder(context: Context, config: ConfigRecord) -> FederatedPreprocessor:
    record = context.state.config_records.get(_STATE_RECORD)
    digest = str(config.get(PREP_DIGEST_KEY))
    if record is None or record.get(PREP_DIGEST_KEY) != digest:
        raise RuntimeError(
            f"bank {resolve_party(context).name} has no shared encoder {digest}: the server skipped the prep step"
        )
    return FederatedPreprocessor.from_json(str(record[PREP_KEY]))


def _global_model(job: HorizontalJob, prep: FederatedPreprocessor, arrays: ArrayRecord) -> nn.Module:
    model = make_model(job.model_kind, prep.n_features_out_, job.hidden, job.dropout)
    set_weights(model, arrays.to_numpy_ndarrays())
    return model


def query_schema(msg: Message, context: Context) -> Message:
    """``query.schema``: the bank's columns, levels and bounds (no row values)."""
    table = read_party_table(bank_files(resolve_party(context).data_path)[0])
    schema = json.dumps(local_schema(table.features))
    return Message(RecordDict({CONFIG_KEY: ConfigRecord({SCHEMA_KEY: schema})}), reply_to=msg)


def query_prep(msg: Message, context: Context) -> Message:
    """``query.prep``: keep the shared encoder in the node's state; reply with its digest."""
    text = str(msg.content[CONFIG_KEY][PREP_KEY])
    prep = FederatedPreprocessor.from_json(text)
    context.state.config_records[_STATE_RECORD] = ConfigRecord({PREP_KEY: text, PREP_DIGEST_KEY: prep.digest})
    return Message(RecordDict({CONFIG_KEY: ConfigRecord({PREP_DIGEST_KEY: prep.digest})}), reply_to=msg)


def train_stats(msg: Message, context: Context) -> Message:
    """``train.stats``: the bank's moments vector for the merged schema, weighted by its training rows."""
    table = read_party_table(bank_files(resolve_party(context).data_path)[0])
    schema = json.loads(str(msg.content[CONFIG_KEY][SCHEMA_KEY]))
    moments = local_moments(table.features, schema)
    content = RecordDict(
        {
            ARRAYS_KEY: ArrayRecord({MOMENTS_KEY: Array(np.asarray(moments))}),
            METRICS_KEY: MetricRecord({WEIGHT_KEY: table.n_rows}),
        }
    )
    return Message(content, reply_to=msg)


def train(msg: Message, context: Context) -> Message:
    """``train``: `local_train` from the global model; the new weights under the request's array names."""
    job = _job(context)
    torch.set_num_threads(job.train.num_threads)
    config = msg.content[CONFIG_KEY]
    arrays = msg.content[ARRAYS_KEY]
    prep = _shared_encoder(context, config)
    rows = encoded_rows(resolve_party(context).data_path, prep)
    model = _global_model(job, prep, arrays)
    loss = local_train(model, rows, job, config, resolve_party(context).name)
    weights = get_weights(model)
    n_train = len(rows.y_train)
    if job.horizontal.secagg.enabled:
        check_secagg_range(job, weights, n_train)
    # Under DP every bank weighs 1 (Flower's noise is calibrated to an unweighted mean) and reports no
    # unnoised training metric.
    metrics = (
        {WEIGHT_KEY: 1} if job.horizontal.dp.active else {WEIGHT_KEY: n_train, "train_loss": float(loss)}
    )
    out = ArrayRecord({k: Array(np.asarray(w)) for k, w in zip(arrays.keys(), weights, strict=True)})
    return Message(RecordDict({ARRAYS_KEY: out, METRICS_KEY: MetricRecord(metrics)}), reply_to=msg)


def check_secagg_range(job: HorizontalJob, weights: list[np.ndarray], n_train: int) -> None:
    """SecAgg+ clips each weighted parameter to ±clipping_range; fail loudly instead of silently."""
    secagg = job.horizontal.secagg
    weight = (1 if job.horizontal.dp.active else n_train) / job.max_weight
    largest = max(float(np.abs(w).max()) for w in weights if w.size) * weight
    if largest > secagg.clipping_range:
        raise ValueError(
            f"federation.horizontal.secagg.clipping_range: a weighted parameter of {largest:.3g} exceeds "
            f"{secagg.clipping_range}; raise clipping_range (precision falls in proportion)"
        )


def evaluate(msg: Message, context: Context) -> Message:
    """``evaluate``: `local_evaluate` of the global model on the bank's validation rows."""
    job = _job(context)
    torch.set_num_threads(job.train.num_threads)
    prep = _shared_encoder(context, msg.content[CONFIG_KEY])
    rows = encoded_rows(resolve_party(context).data_path, prep)
    metrics = local_evaluate(_global_model(job, prep, msg.content[ARRAYS_KEY]), rows)
    return Message(
        RecordDict({METRICS_KEY: MetricRecord({WEIGHT_KEY: len(rows.y_val), **metrics})}), reply_to=msg
    )


# --- the app ---------------------------------------------------------------------------------------------


def local_dp_epsilon_argument(noise_multiplier: float, delta: float) -> float:
    """The ``epsilon`` to give Flower's ``LocalDpMod`` so its Gaussian std is ``noise_multiplier × 2C``.

    LocalDpMod sets std = sensitivity·sqrt(2 ln(1.25/δ))/ε (the classical one-shot bound); we only use
    that to place the noise. The reported ε is the accountant's composition over all rounds.
    """
    return float(np.sqrt(2.0 * np.log(1.25 / delta)) / noise_multiplier)


def dp_mods(job: HorizontalJob) -> list[Mod]:
    """Flower's client-side DP mods for the job's mode (none for the server-side modes)."""
    dp = job.horizontal.dp
    if not dp.active:
        return []
    if dp.mode == "client-fixed":
        return [fixedclipping_mod]
    if dp.mode == "client-adaptive":
        return [adaptiveclipping_mod]
    if dp.mode == "local":
        if job.noise_multiplier is None or job.noise_multiplier <= 0:
            raise ValueError("local DP needs a positive resolved noise multiplier")
        # Local DP protects any two updates of norm <= C, which differ by up to 2C: sensitivity 2C.
        epsilon = local_dp_epsilon_argument(job.noise_multiplier, dp.delta)
        return [LocalDpMod(dp.clipping_norm, 2.0 * dp.clipping_norm, epsilon, dp.delta)]
    return []


def build_client_app(job: HorizontalJob, extra_mods: Sequence[Mod] = ()) -> ClientApp:
    """The banks' ClientApp: the five handlers, Flower's DP mods on ``train``.

    ``extra_mods`` (e.g. the robustness audit's poisoning mod) sit outside the DP mods on ``train``: they
    see a bank's plaintext update after its own clipping, as a malicious bank would. With SecAgg+ the
    ``train`` handler is `fedrisk.federation.horizontal_secagg.secagg_train` around the same steps.
    """
    app = ClientApp()
    app.query(SCHEMA_ACTION)(query_schema)
    app.query(PREP_ACTION)(query_prep)
    app.evaluate()(evaluate)
    train_mods = [*extra_mods, *dp_mods(job)]
    if job.horizontal.secagg.enabled:
        from fedrisk.federation.horizontal_secagg import add_secagg_train

        add_secagg_train(app, train_stats, train, train_mods)
    else:
        app.train(STATS_ACTION)(train_stats)
        app.train(mods=train_mods)(train)
    return app
