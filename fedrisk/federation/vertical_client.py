"""The holders' ClientApp for vertical federation: bank, tax authority and platform each run one bottom model.

Each node reads only its own table (located by its node config, `fedrisk.federation.nodes`), encodes it
with a preprocessor fitted on its own rows, and answers three message types from the label holder's
coordinator (the shape of Flower's ``examples/vertical-fl``):

- ``query.vertical_setup``: the id list the label holder shares with this holder (its *roster*, from PSI);
  the reply names roster entries the holder does not actually have (PSI false positives);
- ``train.vertical_step``: apply the gradient for the last embeddings, then embed the next rows; rows are
  int32 positions into the roster, never ids or features;
- ``query.vertical_score``: restore the best weights and embed rows for inference.

Only embeddings (one number per applicant for a linear bottom) leave the holder. Learning state lives in
``context.state`` so any process can take the next message (Flower's Ray engine passes the Context
between actors); a per-process cache keyed by a run token and a version spares rebuilding it when the same
process takes the next message, which is the normal case.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedrisk.config.model import TrainConfig
from fedrisk.config.vertical import VerticalConfig
from fedrisk.data.preprocessing import HolderPreprocessor
from fedrisk.federation.nodes import party_query_reply, read_party_table, resolve_party
from fedrisk.models.split import make_bottom
from fedrisk.models.split_holder import HolderBottom, StepReply, StepRequest
from fedrisk.protocol.psi import partner_rows

SETUP = "query.vertical_setup"
STEP = "train.vertical_step"
SCORE = "query.vertical_score"

#: Run-config keys every vertical app reads (set by `fedrisk.federation.vertical`).
MODEL_KIND_KEY = "vertical-model-kind"
TRAIN_CONFIG_KEY = "vertical-train-config"
VERTICAL_CONFIG_KEY = "vertical-config"
SEED_KEY = "vertical-seed"

_STATE_META = "vertical"
_STATE_ROSTER = "vertical.roster"
_STATE_MODEL = "vertical.model"
_CONTROL = "control"
_ARRAYS = "arrays"

app = ClientApp()


# ---------------------------------------------------------------------------------------------------------
# Wire format, shared with the coordinator (fedrisk.federation.vertical_server)


#: Flower's ``Array`` carries any serialization its ``stype`` names. Raw C-order bytes (dtype string with
#: byte order, e.g. ``<f4``) skip ``np.save``'s header and ``np.load``'s parser: ~150 us per array on this
#: machine, which at split learning's message sizes was most of a round trip.
RAW_STYPE = "fedrisk.raw"


def to_array(values: np.ndarray) -> Array:
    """A numpy array as a Flower ``Array`` of raw bytes (no pickle, no header)."""
    values = np.ascontiguousarray(values)
    return Array(
        dtype=values.dtype.str,
        shape=tuple(int(n) for n in values.shape),
        stype=RAW_STYPE,
        data=values.tobytes(),
    )


def from_array(array: Array) -> np.ndarray:
    """Inverse of `to_array` (a writable copy); Flower's own numpy arrays are read as Flower reads them."""
    if array.stype != RAW_STYPE:
        return array.numpy()
    return np.frombuffer(array.data, dtype=np.dtype(array.dtype)).reshape(array.shape).copy()


def _array_record(arrays: dict[str, np.ndarray | None]) -> ArrayRecord:
    return ArrayRecord({k: to_array(v) for k, v in arrays.items() if v is not None})


def encode_step(request: StepRequest, kind: str = "step") -> RecordDict:
    """A `StepRequest` as message content (``kind`` labels it in the message log)."""
    control = ConfigRecord({"kind": kind, "snapshot": request.snapshot, "restore": request.restore})
    arrays = {"grad": request.grad, "rows": request.rows, "eval_rows": request.eval_rows}
    return RecordDict({_CONTROL: control, _ARRAYS: _array_record(arrays)})


def decode_step(content: RecordDict) -> StepRequest:
    control, arrays = content.config_records[_CONTROL], content.array_records[_ARRAYS]

    def get(key: str) -> np.ndarray | None:
        return from_array(arrays[key]) if key in arrays else None

    return StepRequest(
        snapshot=bool(control["snapshot"]),
        grad=get("grad"),
        restore=bool(control["restore"]),
        rows=get("rows"),
        eval_rows=get("eval_rows"),
    )


def encode_reply(reply: StepReply) -> RecordDict:
    return RecordDict(
        {_ARRAYS: _array_record({"embedding": reply.embedding, "eval_embedding": reply.eval_embedding})}
    )


def decode_reply(content: RecordDict) -> StepReply:
    arrays = content.array_records[_ARRAYS]
    return StepReply(
        embedding=from_array(arrays["embedding"]) if "embedding" in arrays else None,
        eval_embedding=from_array(arrays["eval_embedding"]) if "eval_embedding" in arrays else None,
    )


def encode_setup(roster_ids: np.ndarray, fit_rows: np.ndarray | None) -> RecordDict:
    """The roster (ids as fixed-width unicode, no pickle) and, for the label holder's own node, the
    roster positions of its training applicants (its preprocessing is fitted on those only)."""
    ids = np.asarray(roster_ids).astype(str)
    return RecordDict(
        {
            _CONTROL: ConfigRecord({"kind": "setup"}),
            _ARRAYS: _array_record({"ids": ids, "fit_rows": fit_rows}),
        }
    )


# ---------------------------------------------------------------------------------------------------------
# Holder state


@dataclass
class _Live:
    """A holder's bottom as live torch objects, and which ``context.state`` version it reflects."""

    token: str
    version: int
    bottom: HolderBottom
    state: RecordDict | None = None
    """The ``context.state`` object last seen; the same object again means the engine keeps Contexts in
    this process (fedrisk's in-process grid) and nothing else can read the state between messages."""


_cache: OrderedDict[str, _Live] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 16


def app_settings(context: Context) -> tuple[str, TrainConfig, VerticalConfig, int]:
    """Model kind, training and vertical settings, seed: the same for every app of a run (run config)."""
    rc = context.run_config
    return (
        str(rc[MODEL_KIND_KEY]),
        TrainConfig.model_validate_json(str(rc[TRAIN_CONFIG_KEY])),
        VerticalConfig.model_validate_json(str(rc[VERTICAL_CONFIG_KEY])),
        int(rc[SEED_KEY]),
    )


def _build(context: Context) -> HolderBottom:
    """Re-create the holder's bottom from its own table and ``context.state`` (deterministic)."""
    kind, train_cfg, vcfg, seed = app_settings(context)
    torch.set_num_threads(train_cfg.num_threads)
    party = resolve_party(context)
    table = read_party_table(party.data_path)
    roster = context.state[_STATE_ROSTER]
    rows = from_array(roster["rows"])
    known = rows >= 0
    if "fit_rows" in roster:  # the label holder: fit on its training applicants only
        prep = HolderPreprocessor().fit(table.features.iloc[rows[from_array(roster["fit_rows"])]])
    else:  # a partner: fit on its own table (no labels involved)
        prep = HolderPreprocessor().fit(table.features)
    X = np.zeros((len(rows), prep.n_features_out_), dtype=np.float32)
    if known.any():
        X[known] = prep.transform(table.features.iloc[rows[known]])
    module = make_bottom(
        kind, X.shape[1], party.name, seed, vcfg.embedding_dim, vcfg.bottom_hidden, vcfg.dropout
    )
    bottom = HolderBottom(module, X, train_cfg)
    if _STATE_MODEL in context.state:
        bottom.load_state_arrays({k: from_array(v) for k, v in context.state[_STATE_MODEL].items()})
    return bottom


def _live(context: Context) -> _Live:
    meta = context.state[_STATE_META]
    token, version = str(meta["token"]), int(meta["version"])
    with _cache_lock:
        hit = _cache.get(token)
        if hit is not None and hit.version == version:
            _cache.move_to_end(token)
            return hit
    if int(meta["saved"]) != version:
        raise RuntimeError(
            f"holder state version {version} was never saved (last saved: {meta['saved']}): the engine moved this "
            "node to another process after fedrisk assumed it would not"
        )
    live = _Live(token, version, _build(context))
    with _cache_lock:
        _cache[token] = live
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return live


def _save(context: Context, live: _Live) -> None:
    """Bump the version; write the learning state unless this process provably keeps the Context."""
    same_context = live.state is context.state
    live.version += 1
    live.state = context.state
    saved = int(context.state[_STATE_META]["saved"])
    if not same_context:
        context.state[_STATE_MODEL] = _array_record(live.bottom.state_arrays())
        saved = live.version
    context.state[_STATE_META] = ConfigRecord({"token": live.token, "version": live.version, "saved": saved})


# ---------------------------------------------------------------------------------------------------------
# Handlers


@app.query("vertical_setup")
def setup(msg: Message, context: Context) -> Message:
    """Map the roster to own rows, fit own preprocessing, build the bottom; reply with absent entries."""
    arrays = msg.content.array_records[_ARRAYS]
    table = read_party_table(resolve_party(context).data_path)
    rows = partner_rows(table.ids, from_array(arrays["ids"])).astype(np.int32)
    roster = {"rows": rows}
    if "fit_rows" in arrays:
        roster["fit_rows"] = from_array(arrays["fit_rows"])
    context.state[_STATE_ROSTER] = _array_record(roster)
    context.state.pop(_STATE_MODEL, None)
    context.state[_STATE_META] = ConfigRecord({"token": uuid.uuid4().hex, "version": 0, "saved": 0})
    live = _live(context)
    _save(context, live)
    absent = np.flatnonzero(rows < 0).astype(np.int32)
    return Message(RecordDict({_ARRAYS: _array_record({"absent": absent})}), reply_to=msg)


@app.train("vertical_step")
def step(msg: Message, context: Context) -> Message:
    """One training round trip: gradient in, next embeddings out."""
    live = _live(context)
    reply = live.bottom.step(decode_step(msg.content))
    _save(context, live)
    return Message(encode_reply(reply), reply_to=msg)


@app.query("vertical_score")
def score(msg: Message, context: Context) -> Message:
    """Inference with the best weights (restored first when the coordinator asks)."""
    return step(msg, context)


@app.query("fedrisk_party")
def party(msg: Message, context: Context) -> Message:
    """Say which party this node is (lets the coordinator map node IDs to holders under any engine)."""
    return party_query_reply(msg, context)
