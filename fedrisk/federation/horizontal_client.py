"""A bank's Flower ClientApp for horizontal federation (legacy NumPyClient API, so SecAgg+ works).

Each bank reads only its own training and validation rows (the directory its node config points to;
test applicants never reach the ClientApp) and answers three requests:

- ``get_properties`` with ``task = "schema"``: its columns, levels and magnitude bounds
  (`fedrisk.protocol.federated_stats.local_schema`);
- ``fit`` with ``task = "stats"``: its preprocessing moments vector, weighted by its row count;
- ``get_properties`` with ``task = "prep"``: the shared encoder, kept in the node's ``context.state``
  (later messages name it by digest, so it crosses the wire once, not every round);
- ``fit`` (training): local epochs of the shared training routine from the global model, FedProx's
  proximal term when the strategy sends ``proximal_mu``; ``evaluate``: loss, AUC and KS on its own
  validation rows.

Flower's mods do the rest: ``secaggplus_mod`` masks what leaves the bank, the clipping mods and
``LocalDpMod`` clip (and noise) the update. Under DP every bank reports weight 1 and no training
metrics, because Flower's DP noise is calibrated to an unweighted mean and metrics are not noised.
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
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client import Client, ClientApp, NumPyClient
from flwr.client.mod import LocalDpMod, adaptiveclipping_mod, fixedclipping_mod, secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable, Mod
from torch import nn

from fedrisk.config.horizontal import HorizontalJob
from fedrisk.core.metrics import ks_statistic
from fedrisk.data.table import PartyTable
from fedrisk.federation.nodes import read_party_table, resolve_party
from fedrisk.models.nets import make_model
from fedrisk.models.training import bce, make_optimizer, predict_logits, run_epochs
from fedrisk.protocol.federated_stats import FederatedPreprocessor, local_moments, local_schema

TRAIN_FILE = "train.parquet"
VAL_FILE = "val.parquet"

TASK_KEY = "task"
SCHEMA_TASK = "schema"
STATS_TASK = "stats"
PREP_TASK = "prep"
PREP_KEY = "prep"
PREP_DIGEST_KEY = "prep_digest"
SCHEMA_KEY = "schema"
_STATE_RECORD = "fedrisk.horizontal"


def bank_files(data_dir: str | Path) -> tuple[Path, Path]:
    """Where a bank's training and validation tables live inside its data directory."""
    data_dir = Path(data_dir)
    return data_dir / TRAIN_FILE, data_dir / VAL_FILE


def get_weights(model: nn.Module) -> list[np.ndarray]:
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    keys = list(model.state_dict())
    if len(keys) != len(weights):
        raise ValueError(f"model has {len(keys)} tensors, received {len(weights)}")
    model.load_state_dict({k: torch.as_tensor(np.asarray(w)) for k, w in zip(keys, weights, strict=True)})


@dataclass
class _Encoded:
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray


# Encoded rows per (bank directory, encoder digest): a bank encodes its rows once per run, not per round.
_encoded: dict[str, tuple[str, _Encoded]] = {}
_encoded_lock = threading.Lock()


def _encoded_rows(data_dir: Path, prep: FederatedPreprocessor) -> _Encoded:
    key, digest = str(data_dir.resolve()), prep.digest
    with _encoded_lock:
        hit = _encoded.get(key)
        if hit is not None and hit[0] == digest:
            return hit[1]
    train_path, val_path = bank_files(data_dir)
    train, val = read_party_table(train_path), read_party_table(val_path)
    rows = _Encoded(
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
    """FedProx's (mu/2)·||w − w_global||² (Li et al. 2020): Flower's FedProx sends ``proximal_mu`` and
    leaves the term to the client's training loop, so it is written here."""
    anchor = [p.detach().clone() for p in model.parameters()]

    def term(m: nn.Module) -> torch.Tensor:
        return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(m.parameters(), anchor, strict=True))

    return term


class BankClient(NumPyClient):
    """One bank: its own rows, the shared model family, the shared training routine.

    Parameters
    ----------
    name : str
        The bank's party name.
    data_dir : Path
        Directory with the bank's ``train.parquet`` and ``val.parquet`` (fedrisk party tables).
    job : HorizontalJob
        Model, training and federation settings shared by every app of the run.
    state : RecordDict
        The node's persistent ``context.state`` (holds the shared encoder between messages).
    """

    def __init__(self, name: str, data_dir: Path, job: HorizontalJob, state: RecordDict) -> None:
        self.name = name
        self.data_dir = Path(data_dir)
        self.job = job
        self.state = state

    def _prep(self, config: dict) -> FederatedPreprocessor:
        record = self.state.config_records.get(_STATE_RECORD)
        digest = str(config.get(PREP_DIGEST_KEY))
        if record is None or record.get(PREP_DIGEST_KEY) != digest:
            raise RuntimeError(
                f"bank {self.name} has no shared encoder {digest}: the server skipped the prep step"
            )
        return FederatedPreprocessor.from_json(str(record[PREP_KEY]))

    def _train_table(self) -> PartyTable:
        return read_party_table(bank_files(self.data_dir)[0])

    def _model(self, prep: FederatedPreprocessor, parameters: list[np.ndarray]) -> nn.Module:
        model = make_model(self.job.model_kind, prep.n_features_out_, self.job.hidden, self.job.dropout)
        set_weights(model, parameters)
        return model

    def get_properties(self, config: dict) -> dict:
        if config.get(TASK_KEY) == SCHEMA_TASK:
            return {SCHEMA_KEY: json.dumps(local_schema(self._train_table().features))}
        if config.get(TASK_KEY) == PREP_TASK:
            prep = FederatedPreprocessor.from_json(str(config[PREP_KEY]))
            self.state.config_records[_STATE_RECORD] = ConfigRecord(
                {PREP_KEY: str(config[PREP_KEY]), PREP_DIGEST_KEY: prep.digest}
            )
            return {PREP_DIGEST_KEY: prep.digest}
        return {}

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
        if config.get(TASK_KEY) == STATS_TASK:
            table = self._train_table()
            return [local_moments(table.features, json.loads(str(config[SCHEMA_KEY])))], table.n_rows, {}
        torch.set_num_threads(self.job.train.num_threads)
        prep = self._prep(config)
        rows = _encoded_rows(self.data_dir, prep)
        model = self._model(prep, parameters)
        cfg = self.job.train
        mu = float(config.get("proximal_mu", 0.0))
        rng = np.random.default_rng(
            [self.job.seed, int(config.get("round", 0)), zlib.crc32(self.name.encode())]
        )
        loss = run_epochs(
            model,
            rows.X_train,
            rows.y_train,
            self.job.horizontal.local_epochs,
            cfg.batch_size,
            make_optimizer(model, cfg),
            rng,
            loss_hook=_proximal_term(model, mu) if mu > 0 else None,
        )
        weights = get_weights(model)
        n_train = len(rows.y_train)
        if self.job.horizontal.secagg.enabled:
            self._check_secagg_range(weights, n_train)
        if self.job.horizontal.dp.active:
            return weights, 1, {}
        return weights, n_train, {"train_loss": float(loss)}

    def _check_secagg_range(self, weights: list[np.ndarray], n_train: int) -> None:
        """SecAgg+ clips each weighted parameter to ±clipping_range; fail loudly instead of silently."""
        secagg = self.job.horizontal.secagg
        weight = (1 if self.job.horizontal.dp.active else n_train) / self.job.max_weight
        largest = max(float(np.abs(w).max()) for w in weights if w.size) * weight
        if largest > secagg.clipping_range:
            raise ValueError(
                f"federation.horizontal.secagg.clipping_range: a weighted parameter of {largest:.3g} exceeds "
                f"{secagg.clipping_range}; raise clipping_range (precision falls in proportion)"
            )

    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple[float, int, dict]:
        torch.set_num_threads(self.job.train.num_threads)
        prep = self._prep(config)
        rows = _encoded_rows(self.data_dir, prep)
        logits = predict_logits(self._model(prep, parameters), rows.X_val)
        y = rows.y_val
        metrics = {}
        if 0 < y.sum() < len(y):
            metrics["ks"] = ks_statistic(y, logits)
        return bce(y, logits), len(y), metrics


def _client_fn(context: Context) -> Client:
    party = resolve_party(context)
    job = HorizontalJob.from_run_config(context.run_config)
    return BankClient(party.name, party.data_path, job, context.state).to_client()


def _training_only(mod: Mod) -> Mod:
    """Skip a DP mod on the statistics round: it would clip (or noise) the moments vector as a model update.

    A small adapter because Flower's mods act on every TRAIN message.
    """

    def wrapped(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if msg.has_content():
            fit_config = msg.content.config_records.get("fitins.config")
            if fit_config is not None and fit_config.get(TASK_KEY) == STATS_TASK:
                return call_next(msg, ctxt)
        return mod(msg, ctxt, call_next)

    return wrapped


def local_dp_epsilon_argument(noise_multiplier: float, delta: float) -> float:
    """The ``epsilon`` to give Flower's ``LocalDpMod`` so its Gaussian std is ``noise_multiplier × 2C``.

    LocalDpMod sets std = sensitivity·sqrt(2 ln(1.25/δ))/ε (the classical one-shot bound); we only use
    that to place the noise. The reported ε is the accountant's composition over all rounds.
    """
    return float(np.sqrt(2.0 * np.log(1.25 / delta)) / noise_multiplier)


def build_client_app(job: HorizontalJob, extra_mods: Sequence[Mod] = ()) -> ClientApp:
    """The banks' ClientApp with the mods the job asks for (SecAgg+ outermost, DP innermost).

    ``extra_mods`` (e.g. the robustness audit's poisoning mod) sit inside SecAgg+ and outside the DP
    mods: they see a bank's plaintext update after its own clipping, as a malicious bank would.
    """
    mods: list[Mod] = []
    hcfg = job.horizontal
    if hcfg.secagg.enabled:
        mods.append(secaggplus_mod)
    mods.extend(extra_mods)
    if hcfg.dp.active:
        if hcfg.dp.mode == "client-fixed":
            mods.append(_training_only(fixedclipping_mod))
        elif hcfg.dp.mode == "client-adaptive":
            mods.append(_training_only(adaptiveclipping_mod))
        elif hcfg.dp.mode == "local":
            if job.noise_multiplier is None or job.noise_multiplier <= 0:
                raise ValueError("local DP needs a positive resolved noise multiplier")
            clip = hcfg.dp.clipping_norm
            # Local DP protects any two updates of norm <= C, which differ by up to 2C: sensitivity 2C.
            local = LocalDpMod(
                clipping_norm=clip,
                sensitivity=2.0 * clip,
                epsilon=local_dp_epsilon_argument(job.noise_multiplier, hcfg.dp.delta),
                delta=hcfg.dp.delta,
            )
            mods.append(_training_only(local))
    return ClientApp(client_fn=_client_fn, mods=mods)
