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
from collections import OrderedDict

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedrisk.config.model import TrainConfig
from fedrisk.config.vertical import VerticalConfig
from fedrisk.data.preprocessing import HolderPreprocessor
from fedrisk.federation.node_state import NodeState
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


_holders: NodeState[HolderBottom] = NodeState(_STATE_META, "holder", size=16)
"""The holder's bottom as live torch objects between messages (rebuilt from ``context.state`` if needed)."""
_he_lock = threading.Lock()


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


def _bottom(context: Context) -> HolderBottom:
    return _holders.load(context, lambda: _build(context))


def _save(context: Context, bottom: HolderBottom) -> None:
    """Count the message; write the learning state unless this process provably keeps the Context."""

    def write() -> None:
        context.state[_STATE_MODEL] = _array_record(bottom.state_arrays())

    _holders.save(context, bottom, write)


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
    bottom = _build(context)
    _holders.start(context, bottom)
    _save(context, bottom)
    absent = np.flatnonzero(rows < 0).astype(np.int32)
    return Message(RecordDict({_ARRAYS: _array_record({"absent": absent})}), reply_to=msg)


@app.train("vertical_step")
def step(msg: Message, context: Context) -> Message:
    """One training round trip: gradient in (or, under "he", the opened aggregate), next embeddings out."""
    bottom = _bottom(context)
    request = decode_step(msg.content)
    opened = payloads_of(msg.content).get("opened")
    if opened is not None:  # protection "he": the parameter gradients come from the opened aggregate
        mask = from_array(context.state[_STATE_HE]["mask"]).tobytes()
        shapes = [tuple(p.shape) for p in bottom.module.parameters()]
        request.param_grads = _partner_he(context).param_grads(opened, mask, shapes)
    reply = bottom.step(request)
    _save(context, bottom)
    return Message(encode_reply(reply), reply_to=msg)


# ---------------------------------------------------------------------------------------------------------
# Protection "he": this holder computes on ciphertexts with the label holder's public context only

_he_cache: OrderedDict[str, PartnerHE] = OrderedDict()


def _partner_he(context: Context) -> PartnerHE:
    """The holder's evaluator for the run's public context (rebuilt from ``context.state`` if needed)."""
    public = from_array(context.state[_STATE_HE]["context"]).tobytes()
    key = hashlib.blake2b(public, digest_size=16).hexdigest()
    with _he_lock:
        if key in _he_cache:
            _he_cache.move_to_end(key)
            return _he_cache[key]
    _, _, vcfg, _ = app_settings(context)
    partner = PartnerHE(public, he_params(vcfg.he_scheme, vcfg.he_key_bits))
    with _he_lock:
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
    n_features = int(_bottom(context).X.shape[1])
    return Message(RecordDict({"control": ConfigRecord({"n_features": n_features})}), reply_to=msg)


@app.train("vertical_he_grad")
def he_grad(msg: Message, context: Context) -> Message:
    """``[X | 1]^T [[g]] + [[m]]`` for the rows awaiting a gradient; the mask stays in ``context.state``."""
    bottom = _bottom(context)
    request = payloads_of(msg.content)["request"]
    masked, mask, seconds = _partner_he(context).masked_gradient(request, bottom.pending_inputs())
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
