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

import hashlib
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedrisk.config.model import TrainConfig
from fedrisk.config.vertical import VerticalConfig
from fedrisk.data.preprocessing import HolderPreprocessor
from fedrisk.federation.nodes import party_query_reply, read_party_table, resolve_party
from fedrisk.models.split import make_bottom
from fedrisk.models.split_holder import HolderBottom
from fedrisk.protocol.rosters import partner_rows
from fedrisk.protocol.vertical import (  # noqa: F401 - the codecs' old home re-exports them
    RAW_STYPE,
    SCORE,
    SETUP,
    STEP,
    decode_reply,
    decode_step,
    encode_he_reply,
    encode_reply,
    encode_setup,
    encode_step,
    from_array,
    payloads_of,
    to_array,
)
from fedrisk.protocol.vertical import array_record as _array_record
from fedrisk.protocol.vertical_he import PartnerHE, he_params

#: Run-config keys every vertical app reads (set by `fedrisk.federation.vertical`).
MODEL_KIND_KEY = "vertical-model-kind"
TRAIN_CONFIG_KEY = "vertical-train-config"
VERTICAL_CONFIG_KEY = "vertical-config"
SEED_KEY = "vertical-seed"

_STATE_META = "vertical"
_STATE_ROSTER = "vertical.roster"
_STATE_MODEL = "vertical.model"
_STATE_HE = "vertical.he"
_ARRAYS = "arrays"

app = ClientApp()


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
    """One training round trip: gradient in (or, under "he", the opened aggregate), next embeddings out."""
    live = _live(context)
    request = decode_step(msg.content)
    opened = payloads_of(msg.content).get("opened")
    if opened is not None:  # protection "he": the parameter gradients come from the opened aggregate
        mask = from_array(context.state[_STATE_HE]["mask"]).tobytes()
        shapes = [tuple(p.shape) for p in live.bottom.module.parameters()]
        request.param_grads = _partner_he(context).param_grads(opened, mask, shapes)
    reply = live.bottom.step(request)
    _save(context, live)
    return Message(encode_reply(reply), reply_to=msg)


# ---------------------------------------------------------------------------------------------------------
# Protection "he": this holder computes on ciphertexts with the label holder's public context only

_he_cache: OrderedDict[str, PartnerHE] = OrderedDict()


def _partner_he(context: Context) -> PartnerHE:
    """The holder's evaluator for the run's public context (rebuilt from ``context.state`` if needed)."""
    public = from_array(context.state[_STATE_HE]["context"]).tobytes()
    key = hashlib.blake2b(public, digest_size=16).hexdigest()
    with _cache_lock:
        if key in _he_cache:
            _he_cache.move_to_end(key)
            return _he_cache[key]
    _, _, vcfg, _ = app_settings(context)
    partner = PartnerHE(public, he_params(vcfg.he_scheme, vcfg.he_key_bits))
    with _cache_lock:
        _he_cache[key] = partner
        while len(_he_cache) > 4:
            _he_cache.popitem(last=False)
    return partner


@app.query("vertical_he_setup")
def he_setup(msg: Message, context: Context) -> Message:
    """Keep the key holder's public context; reply with how many columns this holder encodes."""
    public = payloads_of(msg.content)["context"]
    context.state[_STATE_HE] = _array_record({"context": np.frombuffer(public, dtype=np.uint8)})
    _partner_he(context)  # refuses a context of the wrong scheme or key size now, not mid-training
    n_features = int(_live(context).bottom.X.shape[1])
    return Message(RecordDict({"control": ConfigRecord({"n_features": n_features})}), reply_to=msg)


@app.train("vertical_he_grad")
def he_grad(msg: Message, context: Context) -> Message:
    """``[X | 1]^T [[g]] + [[m]]`` for the rows awaiting a gradient; the mask stays in ``context.state``."""
    live = _live(context)
    request = payloads_of(msg.content)["request"]
    masked, mask, seconds = _partner_he(context).masked_gradient(request, live.bottom.pending_inputs())
    record = context.state[_STATE_HE]
    record["mask"] = to_array(np.frombuffer(mask, dtype=np.uint8))
    context.state[_STATE_HE] = record
    return Message(encode_he_reply(masked, seconds), reply_to=msg)


@app.query("vertical_score")
def score(msg: Message, context: Context) -> Message:
    """Inference with the best weights (restored first when the coordinator asks)."""
    return step(msg, context)


@app.query("fedrisk_party")
def party(msg: Message, context: Context) -> Message:
    """Say which party this node is (lets the coordinator map node IDs to holders under any engine)."""
    return party_query_reply(msg, context)
