"""The vertical split-learning protocol on the wire: what the label holder and each holder send each other.

Message types (the shape of Flower's ``examples/vertical-fl``):

- ``query.vertical_setup``: the holder's roster (the ids shared by PSI); the reply names absent entries;
- ``train.vertical_step`` / ``query.vertical_score``: a `StepRequest` (gradient for the last embeddings,
  rows to embed); the reply a `StepReply` (embeddings);
- under ``protection = "he"`` (`fedrisk.protocol.vertical_he`): ``query.vertical_he_setup`` carries the
  key holder's public context (the reply: the holder's feature count), and ``train.vertical_he_grad`` the
  encrypted gradient (the reply: the holder's masked encrypted aggregate); the opened aggregate then rides
  on the next step message as a payload.

Arrays travel as raw C-order bytes, opaque payloads (ciphertexts) as uint8 arrays; nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedrisk.models.split_holder import StepReply, StepRequest

SETUP = "query.vertical_setup"
STEP = "train.vertical_step"
SCORE = "query.vertical_score"
HE_SETUP = "query.vertical_he_setup"
HE_GRAD = "train.vertical_he_grad"

_CONTROL = "control"
_ARRAYS = "arrays"
_PAYLOADS = "payloads"


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


def array_record(arrays: dict[str, np.ndarray | None]) -> ArrayRecord:
    """Named arrays (None entries skipped) as one Flower ``ArrayRecord``."""
    return ArrayRecord({k: to_array(v) for k, v in arrays.items() if v is not None})


def encode_step(request: StepRequest, kind: str = "step") -> RecordDict:
    """A `StepRequest` as message content (``kind`` labels it in the message log)."""
    control = ConfigRecord({"kind": kind, "snapshot": request.snapshot, "restore": request.restore})
    arrays = {"grad": request.grad, "rows": request.rows, "eval_rows": request.eval_rows}
    return RecordDict({_CONTROL: control, _ARRAYS: array_record(arrays)})


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
        {_ARRAYS: array_record({"embedding": reply.embedding, "eval_embedding": reply.eval_embedding})}
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
            _ARRAYS: array_record({"ids": ids, "fit_rows": fit_rows}),
        }
    )


def with_payloads(content: RecordDict, payloads: Mapping[str, bytes] | None) -> RecordDict:
    """``content`` plus opaque byte payloads (e.g. ciphertexts), each as a uint8 array."""
    if payloads:
        content[_PAYLOADS] = ArrayRecord(
            {k: to_array(np.frombuffer(bytes(v), dtype=np.uint8)) for k, v in payloads.items()}
        )
    return content


def payloads_of(content: RecordDict) -> dict[str, bytes]:
    """The opaque payloads `with_payloads` attached (empty when none)."""
    if _PAYLOADS not in content.array_records:
        return {}
    return {k: from_array(a).tobytes() for k, a in content.array_records[_PAYLOADS].items()}


def encode_he_setup(public_context: bytes) -> RecordDict:
    """The key holder's public context for one holder (its scheme and key size are in the run config)."""
    return with_payloads(
        RecordDict({_CONTROL: ConfigRecord({"kind": "he_setup"})}), {"context": public_context}
    )


def encode_he_grad(request: bytes) -> RecordDict:
    """The encrypted gradient for the holder's pending rows."""
    return with_payloads(RecordDict({_CONTROL: ConfigRecord({"kind": "he_grad"})}), {"request": request})


def encode_he_reply(masked: bytes, seconds: float) -> RecordDict:
    """The holder's masked encrypted aggregate and the seconds it spent computing it."""
    return with_payloads(
        RecordDict({_CONTROL: ConfigRecord({"seconds": float(seconds)})}), {"masked": masked}
    )


def decode_he_reply(content: RecordDict) -> tuple[bytes, float]:
    return payloads_of(content)["masked"], float(content.config_records[_CONTROL]["seconds"])
