"""The banks' ClientApp for horizontal gradient-boosted trees: each bank keeps its rows, labels and margins.

Messages from the server (`gbdt_horizontal_server`), one Flower message type each:
``query.gbdth_levels`` (categorical levels, label and row counts), ``query.gbdth_summary`` (this bank's cut
points and rows per bin, for agreeing the bins), ``train.gbdth_setup`` (the agreed bins, the base score),
then per tree ``train.gbdth_start`` (gradients from own margins), ``query.gbdth_build`` (histograms of
some nodes), ``train.gbdth_split`` (route own rows; row counts back) and ``train.gbdth_finish`` (add the
tree to own margins; validation log-loss sum back). What leaves a bank: counts, bin summaries, histogram
sums, row counts per child and a loss sum -- never a row.

State lives in a per-process cache keyed by a run token in ``context.state``; whenever the Context is not
the one this process saw last, the bank's arrays are saved there and rebuilt from it on the next call.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedrisk.federation.horizontal_client import bank_files
from fedrisk.federation.node_state import NodeState
from fedrisk.federation.nodes import party_query_reply, read_party_table, resolve_party
from fedrisk.federation.vertical_client import from_array, to_array
from fedrisk.models.gbdt import Binner, LocalHistograms, Split
from fedrisk.models.gbdt.booster import logistic_gradients, logloss
from fedrisk.models.gbdt.horizontal import bank_levels, bank_summary
from fedrisk.models.gbdt.tree import unpack_trees

_STATE = "gbdth"
_SAVED_ARRAYS = ("margin", "valid_margin", "positions", "grad", "hess")

app = ClientApp()


def content(arrays: dict[str, np.ndarray] | None = None, **config) -> RecordDict:
    """Message content: raw arrays and scalar settings."""
    return RecordDict(
        {
            "arrays": ArrayRecord({k: to_array(v) for k, v in (arrays or {}).items()}),
            "control": ConfigRecord(config),
        }
    )


def arrays_of(record: RecordDict) -> dict[str, np.ndarray]:
    return {k: from_array(v) for k, v in record.array_records["arrays"].items()}


def control_of(record: RecordDict) -> ConfigRecord:
    return record.config_records["control"]


class _Bank:
    """One bank's training state: its codes, labels, margins and the current tree's positions."""

    def __init__(self, data_dir: str, setup: ConfigRecord) -> None:
        train_path, val_path = bank_files(data_dir)
        train, val = read_party_table(train_path), read_party_table(val_path)
        binner = Binner.from_dict(json.loads(str(setup["bins"])))
        base = np.float32(float(setup["base_margin"]))
        self.hist = LocalHistograms(binner.transform(train.features), binner.max_bins)
        self.valid_codes = binner.transform(val.features)
        self.y, self.valid_y = np.asarray(train.label), np.asarray(val.label)
        self.margin = np.full(len(self.y), base, dtype=np.float32)
        self.valid_margin = np.full(len(self.valid_y), base, dtype=np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        h = self.hist
        return {"margin": self.margin, "valid_margin": self.valid_margin, "positions": h.positions,
                "grad": h.grad, "hess": h.hess}  # fmt: skip

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.margin, self.valid_margin = arrays["margin"], arrays["valid_margin"]
        self.hist.positions, self.hist.grad, self.hist.hess = (
            arrays["positions"],
            arrays["grad"],
            arrays["hess"],
        )


_banks: NodeState[_Bank] = NodeState(_STATE, "gbdt bank")
"""Unbounded: in one process an evicted bank whose writes were skipped could not be rebuilt."""


def _bank(context: Context) -> _Bank:
    def rebuild() -> _Bank:
        bank = _Bank(resolve_party(context).data_path, context.state[f"{_STATE}.setup"])
        bank.restore({k: from_array(v) for k, v in context.state[f"{_STATE}.arrays"].items()})
        return bank

    return _banks.load(context, rebuild)


def _save(context: Context, bank: _Bank) -> None:
    def write() -> None:
        context.state[f"{_STATE}.arrays"] = ArrayRecord({k: to_array(v) for k, v in bank.arrays().items()})

    _banks.save(context, bank, write)


def _train_features(context: Context):
    return read_party_table(bank_files(resolve_party(context).data_path)[0])


# ---------------------------------------------------------------------------------------------------------
# Handlers


@app.query("gbdth_levels")
def levels(msg: Message, context: Context) -> Message:
    train = _train_features(context)
    reply = content(
        levels=json.dumps(bank_levels(train.features)),
        rows=len(train.ids),
        positives=int(np.sum(train.label)),
    )
    return Message(reply, reply_to=msg)


@app.query("gbdth_summary")
def summary(msg: Message, context: Context) -> Message:
    control = control_of(msg.content)
    levels = {k: tuple(v) for k, v in json.loads(str(control["levels"])).items()}
    party = resolve_party(context)
    s = bank_summary(_train_features(context).features, int(control["max_bins"]), levels, party.name)
    arrays = {f"cuts.{j}": c.thresholds for j, c in enumerate(s.columns)}
    arrays.update({f"counts.{j}": np.asarray(n, dtype=np.int64) for j, n in enumerate(s.counts)})
    names = [str(c.name) for c in s.columns]
    return Message(content(arrays, columns=json.dumps(names), levels=json.dumps(levels)), reply_to=msg)


@app.train("gbdth_setup")
def setup(msg: Message, context: Context) -> Message:
    control = control_of(msg.content)
    context.state[f"{_STATE}.setup"] = ConfigRecord(
        {"bins": control["bins"], "base_margin": control["base_margin"]}
    )
    bank = _Bank(resolve_party(context).data_path, context.state[f"{_STATE}.setup"])
    _banks.start(context, bank)
    _save(context, bank)
    return Message(content(rows=len(bank.y)), reply_to=msg)


@app.train("gbdth_start")
def start(msg: Message, context: Context) -> Message:
    bank = _bank(context)
    bank.hist.start_tree(*logistic_gradients(bank.margin, bank.y))
    _save(context, bank)
    return Message(content(), reply_to=msg)


@app.query("gbdth_build")
def build(msg: Message, context: Context) -> Message:
    bank = _bank(context)
    nodes = arrays_of(msg.content)["nodes"].tolist()
    return Message(content({"hist": np.ascontiguousarray(bank.hist.build(nodes))}), reply_to=msg)


@app.train("gbdth_split")
def split(msg: Message, context: Context) -> Message:
    bank = _bank(context)
    splits = [
        Split(int(a), int(b), int(c), int(f), int(v), bool(d))
        for a, b, c, f, v, d in arrays_of(msg.content)["splits"].tolist()
    ]
    counts = bank.hist.apply_splits(splits)
    _save(context, bank)
    return Message(content({"counts": counts}), reply_to=msg)


@app.train("gbdth_finish")
def finish(msg: Message, context: Context) -> Message:
    bank = _bank(context)
    (tree,) = unpack_trees(arrays_of(msg.content))
    bank.margin += tree.value[bank.hist.positions]
    bank.valid_margin += tree.predict(bank.valid_codes, bank.hist.max_bins)
    loss = logloss(bank.valid_margin, bank.valid_y) * len(bank.valid_y) if len(bank.valid_y) else 0.0
    _save(context, bank)
    return Message(content(loss_sum=float(loss), rows=len(bank.valid_y)), reply_to=msg)


@app.query("fedrisk_party")
def party(msg: Message, context: Context) -> Message:
    return party_query_reply(msg, context)
