"""A bank's ClientApp for personalised federation (Flower Message API), run after the global federation.

The bank reads only its own training and validation rows (its node's data directory, as in horizontal
federation) and answers:

- ``query.prep``: keep the shared encoder in ``context.state``; reply with the bank's name and whether it
  has enough defaults to personalise (counts only, never rows);
- ``query.update``: train ``local_epochs`` from the global model and return the change (clustered FL's
  signal: banks whose changes point the same way share a cluster);
- ``train`` / ``evaluate`` (default actions): FedAvg within a cluster, as Flower's ``FedAvg`` strategy
  expects them (``arrays``, ``num-examples``);
- ``train.personalize``: build the bank's personal model -- fine-tune (or Ditto) from the global model for
  as many epochs as k-fold cross-validation on its own rows supports (none: it keeps the global model), or
  adopt its cluster's model if it beats the global one on its validation rows -- and save it in the bank's own directory (`personal_model_path`): the personal model never leaves the
  bank. The reply is a short report (which model is kept and why).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from fedrisk.config.horizontal import HorizontalJob
from fedrisk.data.table import PartyTable
from fedrisk.federation.horizontal_client import bank_files, local_train
from fedrisk.federation.nodes import read_party_table, resolve_party
from fedrisk.models.finetune import HookFactory, change_coordinates, choose_epochs, fine_tune
from fedrisk.models.nets import make_model
from fedrisk.models.training import bce, make_optimizer, predict_logits, run_epochs
from fedrisk.protocol.federated_stats import FederatedPreprocessor

PERSONAL_FILE = "personal_model.npz"
"""The bank's personal model, in the bank's own data directory."""
ENCODER_FILE = "personal_encoder.json"
PREP_KEY, DIGEST_KEY, MODE_KEY = "prep", "digest", "mode"
GLOBAL, CANDIDATE, ARRAYS, CONFIG, REPORT = "global", "candidate", "arrays", "config", "report"
_STATE = "fedrisk.personal"


def personal_model_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / PERSONAL_FILE


def personal_encoder_path(data_dir: str | Path) -> Path:
    """The encoder the bank's kept model reads (its own normalisation when it fine-tuned)."""
    return Path(data_dir) / ENCODER_FILE


def load_arrays(model: nn.Module, arrays: list[np.ndarray]) -> nn.Module:
    """Load a model's tensors from arrays in ``state_dict`` order (how the global model is stored)."""
    keys = list(model.state_dict())
    if len(keys) != len(arrays):
        raise ValueError(f"model has {len(keys)} tensors, received {len(arrays)}")
    model.load_state_dict({k: torch.as_tensor(np.asarray(a)) for k, a in zip(keys, arrays, strict=True)})
    return model


def model_arrays(model: nn.Module) -> list[np.ndarray]:
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


@dataclass
class BankRows:
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray


_rows_cache: dict[tuple[str, str], BankRows] = {}
_rows_lock = threading.Lock()


def bank_tables(data_dir: Path) -> tuple[PartyTable, PartyTable]:
    """The bank's own training and validation tables (nothing else is in its directory)."""
    train_path, val_path = bank_files(data_dir)
    return read_party_table(train_path), read_party_table(val_path)


def bank_rows(data_dir: Path, prep: FederatedPreprocessor) -> BankRows:
    """The bank's training and validation rows encoded with ``prep`` (cached per directory and encoder)."""
    key = (str(Path(data_dir).resolve()), prep.digest)
    with _rows_lock:
        if key in _rows_cache:
            return _rows_cache[key]
    train_t, val_t = bank_tables(data_dir)
    rows = BankRows(
        prep.transform(train_t.features),
        np.asarray(train_t.label, dtype=np.float32),
        prep.transform(val_t.features),
        np.asarray(val_t.label, dtype=np.float32),
    )
    with _rows_lock:
        if len(_rows_cache) > 64:
            _rows_cache.clear()
        _rows_cache[key] = rows
    return rows


def own_encoder(prep: FederatedPreprocessor, features: pd.DataFrame) -> FederatedPreprocessor:
    """The shared encoder with the bank's own mean and scale of each numeric column (its observed values).

    Banks measure differently (feature shift), so the federation's pooled scaling squeezes, stretches or
    clips some of a bank's columns; a bank that keeps its own normalisation statistics (the idea of FedBN,
    Li et al. 2021) fine-tunes in well-conditioned coordinates and loses nothing to the pooled clipping.
    """
    values = features[prep.numeric].to_numpy(dtype=np.float64) if prep.numeric else np.zeros((0, 0))
    mean, scale = list(prep.mean), list(prep.scale)
    for j in range(len(prep.numeric)):
        observed = values[:, j][np.isfinite(values[:, j])]
        if len(observed) > 1 and observed.std() > 1e-12 * max(abs(observed.mean()), 1.0):
            mean[j], scale[j] = float(observed.mean()), float(observed.std())
    return replace(prep, mean=mean, scale=scale)


def to_own_coordinates(
    model: nn.Module, prep: FederatedPreprocessor, own: FederatedPreprocessor
) -> nn.Module:
    """A model over ``prep``'s encoding, re-expressed over ``own``'s (equal where neither clips)."""
    n = prep.n_features_out_
    scale, offset = np.ones(n), np.zeros(n)
    k = len(prep.numeric)
    shared_mean, shared_scale = np.asarray(prep.mean), np.asarray(prep.scale)
    scale[:k] = np.asarray(own.scale) / shared_scale
    offset[:k] = (np.asarray(own.mean) - shared_mean) / shared_scale
    return change_coordinates(model, scale, offset)


def shortfall(rows: BankRows, min_defaults: int) -> str | None:
    """Why a bank cannot personalise (too few defaults to fine-tune and validate on), or None."""
    n_defaults = int(rows.y_train.sum() + rows.y_val.sum())
    if n_defaults < min_defaults:
        return (
            f"{n_defaults} defaults in its training and validation rows (personalising needs {min_defaults})"
        )
    return None


def ditto_term(lam: float) -> HookFactory:
    """Ditto's (lambda/2)·||v − w_global||² around the starting (global) model (Li et al. 2021)."""

    def factory(start: nn.Module) -> Callable[[nn.Module], torch.Tensor]:
        anchor = [p.detach().clone() for p in start.parameters()]

        def term(m: nn.Module) -> torch.Tensor:
            return 0.5 * lam * sum(((p - a) ** 2).sum() for p, a in zip(m.parameters(), anchor, strict=True))

        return term

    return factory


def personalise(
    job: HorizontalJob,
    data_dir: Path,
    prep: FederatedPreprocessor,
    global_model: nn.Module,
    mode: str,
    candidate: nn.Module | None,
    seed: int,
) -> tuple[nn.Module, FederatedPreprocessor, dict]:
    """The bank's kept model, the encoder it scores with, and a report (the global model where personalising
    does not pay).

    ``finetune`` / ``ditto``: the global model moves into the bank's own normalisation (`own_encoder`),
    the fine-tuning length is chosen by k-fold cross-validation over the bank's training and validation
    rows (0 epochs = the global model), and the model is fine-tuned on all of them. ``adopt`` (clustered):
    the cluster's model is kept if it beats the global one on the bank's validation rows.
    """
    personal = job.horizontal.personal
    rows = bank_rows(data_dir, prep)
    report: dict = {"model": "global", "epochs": 0}
    reason = shortfall(rows, max(personal.min_defaults, personal.folds))
    if reason is not None:
        return global_model, prep, {**report, "fallback": reason}
    if mode == "adopt":
        if candidate is None:
            return global_model, prep, report
        val_global = bce(rows.y_val, predict_logits(global_model, rows.X_val))
        val_candidate = bce(rows.y_val, predict_logits(candidate, rows.X_val))
        report.update(loss_global=val_global, loss_personal=val_candidate)
        if val_candidate < val_global:
            return candidate, prep, {**report, "model": "personal"}
        return global_model, prep, report
    own = own_encoder(prep, bank_tables(data_dir)[0].features)
    own_rows = bank_rows(data_dir, own)
    cfg = job.train.model_copy(
        update={"epochs": personal.epochs, "patience": personal.patience, "lr": personal.lr or job.train.lr}
    )
    hook = ditto_term(personal.ditto_lambda) if mode == "ditto" and personal.ditto_lambda > 0 else None
    X = np.vstack([own_rows.X_train, own_rows.X_val])
    y = np.concatenate([own_rows.y_train, own_rows.y_val])
    start = to_own_coordinates(global_model, prep, own)
    choice = choose_epochs(start, X, y, cfg, personal.folds, seed, hook, personal.select)
    report.update(
        epochs=choice.epochs, loss_global=choice.curve[0], loss_personal=choice.curve[choice.epochs]
    )
    model = fine_tune(start, X, y, cfg, choice.epochs, seed, hook)  # 0 epochs: only recalibrated
    return model, own, {**report, "model": "personal" if choice.epochs else "recalibrated"}


# --- the ClientApp -------------------------------------------------------------------------------------


def _setup(context: Context) -> tuple[str, Path, HorizontalJob]:
    party = resolve_party(context)
    job = HorizontalJob.from_run_config(context.run_config)
    torch.set_num_threads(job.train.num_threads)
    return party.name, party.data_path, job


def _prep(context: Context, config: ConfigRecord) -> FederatedPreprocessor:
    record = context.state.config_records.get(_STATE)
    if record is None or record.get(DIGEST_KEY) != config.get(DIGEST_KEY):
        raise RuntimeError("no shared encoder for this digest: the server skipped query.prep")
    return FederatedPreprocessor.from_json(str(record[PREP_KEY]))


def _model(job: HorizontalJob, prep: FederatedPreprocessor, arrays: ArrayRecord) -> nn.Module:
    model = make_model(job.model_kind, prep.n_features_out_, job.hidden, job.dropout)
    return load_arrays(model, arrays.to_numpy_ndarrays())


def _seed(job: HorizontalJob, name: str, step: int) -> list[int]:
    return [job.seed, zlib.crc32(name.encode()), step]


def build_personal_client_app() -> ClientApp:
    """The banks' ClientApp for the personalisation phase (every setting comes from the run config)."""
    app = ClientApp()

    @app.query("prep")
    def prep(msg: Message, context: Context) -> Message:
        name, data_dir, job = _setup(context)
        config = msg.content.config_records[CONFIG]
        encoder = FederatedPreprocessor.from_json(str(config[PREP_KEY]))
        context.state.config_records[_STATE] = ConfigRecord(
            {PREP_KEY: str(config[PREP_KEY]), DIGEST_KEY: encoder.digest}
        )
        reason = shortfall(bank_rows(data_dir, encoder), job.horizontal.personal.min_defaults)
        reply = ConfigRecord({"party": name, DIGEST_KEY: encoder.digest, "fallback": reason or ""})
        return Message(RecordDict({REPORT: reply}), reply_to=msg)

    @app.query("update")
    def update(msg: Message, context: Context) -> Message:
        name, data_dir, job = _setup(context)
        encoder = _prep(context, msg.content.config_records[CONFIG])
        rows = bank_rows(data_dir, encoder)
        start = msg.content.array_records[GLOBAL]
        model = _model(job, encoder, start)
        rng = np.random.default_rng(_seed(job, name, 2**20))  # not a FedAvg round number
        optimizer = make_optimizer(model, job.train)
        run_epochs(
            model,
            rows.X_train,
            rows.y_train,
            job.horizontal.local_epochs,
            job.train.batch_size,
            optimizer,
            rng,
        )
        delta = [w - s for w, s in zip(model_arrays(model), start.to_numpy_ndarrays(), strict=True)]
        content = RecordDict({ARRAYS: ArrayRecord(delta), REPORT: ConfigRecord({"party": name})})
        return Message(content, reply_to=msg)

    @app.train()
    def fit(msg: Message, context: Context) -> Message:
        name, data_dir, job = _setup(context)
        config = msg.content.config_records[CONFIG]
        encoder = _prep(context, config)
        rows = bank_rows(data_dir, encoder)
        model = _model(job, encoder, msg.content.array_records[ARRAYS])
        loss = local_train(model, rows, job, config, name)  # the global federation's local rounds
        metrics = MetricRecord({"num-examples": len(rows.y_train), "train_loss": float(loss)})
        return Message(
            RecordDict({ARRAYS: ArrayRecord(model_arrays(model)), "metrics": metrics}), reply_to=msg
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        _, data_dir, job = _setup(context)
        encoder = _prep(context, msg.content.config_records[CONFIG])
        rows = bank_rows(data_dir, encoder)
        model = _model(job, encoder, msg.content.array_records[ARRAYS])
        loss = bce(rows.y_val, predict_logits(model, rows.X_val))
        metrics = MetricRecord({"num-examples": len(rows.y_val), "val_loss": loss})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    @app.train("personalize")
    def personalize(msg: Message, context: Context) -> Message:
        name, data_dir, job = _setup(context)
        config = msg.content.config_records[CONFIG]
        encoder = _prep(context, config)
        global_model = _model(job, encoder, msg.content.array_records[GLOBAL])
        candidate = msg.content.array_records.get(CANDIDATE)
        candidate_model = None if candidate is None else _model(job, encoder, candidate)
        torch.manual_seed(job.seed)
        model, kept_encoder, report = personalise(
            job,
            data_dir,
            encoder,
            global_model,
            str(config[MODE_KEY]),
            candidate_model,
            zlib.crc32(name.encode()) + job.seed,
        )
        np.savez(personal_model_path(data_dir), *model_arrays(model))
        personal_encoder_path(data_dir).write_text(kept_encoder.to_json())
        report = {k: v for k, v in report.items() if v is not None}
        return Message(RecordDict({REPORT: ConfigRecord({"party": name, **report})}), reply_to=msg)

    return app


def load_personal_model(data_dir: str | Path) -> list[np.ndarray]:
    """A bank's saved personal model (arrays in ``state_dict`` order)."""
    with np.load(personal_model_path(data_dir)) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]
