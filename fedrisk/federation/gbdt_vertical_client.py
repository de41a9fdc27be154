"""The partners' ClientApp for vertical gradient-boosted trees (SecureBoost over Flower messages).

Each partner node reads only its own table and answers the label holder's messages
(`fedrisk.protocol.secureboost.messages`, one Flower message type each) with its `SecureBoostPartner`:
``query.gbdt_rows`` (PSI roster -> its rows and bins), ``query.gbdt_setup`` (public key), then per tree
``train.gbdt_gradients``, ``query.gbdt_histograms``, ``train.gbdt_split``, and for scoring
``query.gbdt_decisions``; ``query.gbdt_close`` ends the run.

The partner object lives in a per-process cache keyed by a run token kept in ``context.state``. When the
engine hands this node's Context to another process (Ray), the messages that built the state are replayed
from ``context.state``, where they are saved whenever the Context is not the one this process saw last.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedrisk.federation.node_state import NodeState
from fedrisk.federation.nodes import party_query_reply, read_party_table, resolve_party
from fedrisk.federation.vertical_client import from_array, to_array
from fedrisk.protocol.paillier import PublicContext
from fedrisk.protocol.secureboost import messages as sb
from fedrisk.protocol.secureboost.partner import SecureBoostPartner

#: Flower message type of each label holder -> partner message.
MESSAGE_TYPES = {
    sb.Rows: "query.gbdt_rows",
    sb.Setup: "query.gbdt_setup",
    sb.Gradients: "train.gbdt_gradients",
    sb.HistogramRequest: "query.gbdt_histograms",
    sb.SplitRequest: "train.gbdt_split",
    sb.DecisionRequest: "query.gbdt_decisions",
    sb.Close: "query.gbdt_close",
}
_KNOWN = {cls.__name__: cls for cls in (*MESSAGE_TYPES, sb.RowsReply, sb.SetupReply, sb.HistogramReply,
                                        sb.SplitReply, sb.DecisionReply)}  # fmt: skip
WORKERS_KEY = "gbdt-paillier-workers"
_STATE = "gbdt"
_REPLAY = ("rows", "setup", "gradients")  # messages whose effect a rebuilt partner must replay

app = ClientApp()


# ---------------------------------------------------------------------------------------------------------
# Codec: a protocol message <-> Flower content (arrays as raw bytes, scalars in a ConfigRecord)


def encode(msg: sb.Message) -> RecordDict:
    arrays, control = {}, {"type": type(msg).__name__}
    for f in fields(msg):
        value = getattr(msg, f.name)
        if value is None:
            continue
        if isinstance(value, np.ndarray):
            arrays[f.name] = to_array(value)
        elif isinstance(value, PublicContext):  # big integers travel as decimal strings
            control.update(
                {"context.n": str(value.n), "context.hs": str(value.hs), "context.bits": value.bits}
            )
        else:
            control[f.name] = value
    return RecordDict({"arrays": ArrayRecord(arrays), "control": ConfigRecord(control)})


def decode(content: RecordDict) -> sb.Message:
    control, arrays = content.config_records["control"], content.array_records["arrays"]
    cls = _KNOWN[str(control["type"])]
    values = {}
    for f in fields(cls):
        if f.name in arrays:
            values[f.name] = from_array(arrays[f.name])
        elif f.name == "context":
            values[f.name] = (
                PublicContext(
                    int(control["context.n"]), int(control["context.hs"]), int(control["context.bits"])
                )
                if "context.n" in control
                else None
            )
        elif f.name in control:
            values[f.name] = control[f.name]
    return cls(**values)


# ---------------------------------------------------------------------------------------------------------
# The partner's state


_partners: NodeState[SecureBoostPartner] = NodeState(_STATE, "gbdt partner")
"""Unbounded: a partner holds worker processes, freed by ``gbdt_close`` (an eviction would leak them)."""


def _stash(context: Context, step: str, content: RecordDict) -> None:
    """Keep a message in ``context.state`` (state holds records, not whole contents)."""
    context.state[f"{_STATE}.{step}.arrays"] = content.array_records["arrays"]
    context.state[f"{_STATE}.{step}.control"] = content.config_records["control"]


def _unstash(context: Context, step: str) -> sb.Message | None:
    if f"{_STATE}.{step}.control" not in context.state:
        return None
    arrays, control = context.state[f"{_STATE}.{step}.arrays"], context.state[f"{_STATE}.{step}.control"]
    return decode(RecordDict({"arrays": arrays, "control": control}))


def _rebuild(context: Context) -> SecureBoostPartner:
    """Replay the saved messages (another process got this node's Context)."""
    party = resolve_party(context)
    table = read_party_table(party.data_path)
    workers = int(context.run_config.get(WORKERS_KEY, 1))
    saved = {k: m for k in _REPLAY if (m := _unstash(context, k)) is not None}
    partner, _ = SecureBoostPartner.from_rows(table.features, table.ids, saved["rows"], workers, party.name)
    if "setup" in saved:
        partner.setup(saved["setup"])
    if "gradients" in saved:
        partner.gradients(saved["gradients"])
    if f"{_STATE}.splits" in context.state:
        table_ = from_array(context.state[f"{_STATE}.splits"]["table"])
        for tree, node, feature, bin_, left in table_.tolist():
            partner.splits.setdefault(tree, {})[node] = (feature, bin_, bool(left))
    return partner


def _save(
    context: Context, partner: SecureBoostPartner, step: str | None, content: RecordDict | None
) -> None:
    """Count the message; persist what a rebuild needs unless this process provably keeps the Context."""

    def write() -> None:
        if step is not None:
            _stash(context, step, content)
        rows = [(t, n, *v) for t, nodes in partner.splits.items() for n, v in nodes.items()] or np.zeros(
            (0, 5)
        )
        context.state[f"{_STATE}.splits"] = ArrayRecord({"table": to_array(np.asarray(rows, dtype=np.int64))})

    _partners.save(context, partner, write)


# ---------------------------------------------------------------------------------------------------------
# Handlers


@app.query("gbdt_rows")
def rows(msg: Message, context: Context) -> Message:
    """Line this partner's table up with the label holder's applicants; fit its bins."""
    party = resolve_party(context)
    table = read_party_table(party.data_path)
    workers = int(context.run_config.get(WORKERS_KEY, 1))
    partner, reply = SecureBoostPartner.from_rows(
        table.features, table.ids, decode(msg.content), workers, party.name
    )
    _partners.start(context, partner)
    _stash(context, "rows", msg.content)
    _save(context, partner, None, None)
    return Message(encode(reply), reply_to=msg)


def _handle(step: str | None, method: str):
    def handler(msg: Message, context: Context) -> Message:
        partner = _partners.load(context, lambda: _rebuild(context))
        reply = getattr(partner, method)(decode(msg.content))
        _save(context, partner, step, msg.content)
        return Message(encode(reply) if reply is not None else RecordDict(), reply_to=msg)

    return handler


app.query("gbdt_setup")(_handle("setup", "setup"))
app.train("gbdt_gradients")(_handle("gradients", "gradients"))
app.query("gbdt_histograms")(_handle(None, "histograms"))
app.train("gbdt_split")(_handle(None, "split"))
app.query("gbdt_decisions")(_handle(None, "decisions"))


@app.query("gbdt_close")
def close(msg: Message, context: Context) -> Message:
    """Free the worker processes; the run's cache entry goes too."""
    partner = _partners.drop(context)
    if partner is not None:
        partner.close()
    return Message(RecordDict(), reply_to=msg)


@app.query("fedrisk_party")
def party(msg: Message, context: Context) -> Message:
    """Say which party this node is."""
    return party_query_reply(msg, context)
