"""The one recorded channel: every message that crosses a data holder's boundary goes through here.

Why one place: a test must be able to prove that no raw row left a holder, and a report must be able to
state the communication cost. Both need a single, complete log, whichever engine (in-process, Flower's Ray
simulation, Flower's deployment engine) carried the messages. `fedrisk.federation.grids.RecordingGrid` wraps any Flower `Grid`, so
the ServerApp code stays engine-agnostic and the log cannot be bypassed by a ServerApp. It also turns error
replies into exceptions: Flower's workflows count a failed client as a "failure" and carry on, which can
finish a run with an untrained model and exit status 0.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flwr.app import Message, RecordDict
from flwr.common.serde import message_to_proto

#: Key an app may put in any ConfigRecord of a message to label it beyond its ``message_type``.
KIND_KEY = "kind"

ArraySpec = tuple[str, tuple[int, ...], str]


class ClientFailure(RuntimeError):
    """A ClientApp replied with an error: the run must stop, not continue with what is left.

    Parameters
    ----------
    party : str
        The failing holder's name (or ``"node <id>"`` when the node's party is unknown).
    node_id : int
        Flower node ID of the failing ClientApp.
    kind : str
        Kind of the message the client failed on.
    reason : str
        The client's error text as Flower reported it.
    """

    def __init__(self, party: str, node_id: int, kind: str, reason: str) -> None:
        self.party = party
        self.node_id = node_id
        self.kind = kind
        self.reason = reason
        super().__init__(f"client '{party}' (node {node_id}) failed on '{kind}': {reason}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.party, self.node_id, self.kind, self.reason))


@dataclass
class MessageRecord:
    """One message across a holder boundary: who, to whom, what kind, which arrays, how many bytes.

    ``round`` is the message's ``group_id`` when that is an integer (Flower's workflows put the server
    round there), else None. ``arrays`` lists ``(record/key, shape, dtype)`` of every array the message
    carries, so tests can check shapes (an embedding, never a raw table). ``nbytes`` is the size of the
    serialized protobuf ``Message``. ``error`` holds the client's error text for error replies.
    """

    round: int | None
    sender: str
    receiver: str
    kind: str
    arrays: list[ArraySpec] = field(default_factory=list)
    nbytes: int = 0
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> MessageRecord:
        return cls(
            round=data.get("round"),
            sender=data["sender"],
            receiver=data["receiver"],
            kind=data["kind"],
            arrays=[
                (str(n), tuple(int(s) for s in shape), str(dt)) for n, shape, dt in data.get("arrays", [])
            ],
            nbytes=int(data.get("nbytes", 0)),
            error=data.get("error"),
        )


def message_nbytes(message: Message) -> int:
    """Exact size of ``message`` as Flower's protobuf ``Message`` (content or error plus metadata)."""
    return message_to_proto(message).ByteSize()


def message_arrays(content: RecordDict | None) -> list[ArraySpec]:
    """``(record/key, shape, dtype)`` of every array in a message's content."""
    if content is None:
        return []
    return [
        (f"{rname}/{key}", tuple(int(s) for s in arr.shape), str(arr.dtype))
        for rname, record in content.array_records.items()
        for key, arr in record.items()
    ]


def message_kind(message: Message) -> str:
    """``message_type``, plus ``:<kind>`` if a ConfigRecord of the content carries a string ``"kind"``."""
    kind = message.metadata.message_type
    if message.has_content():
        for record in message.content.config_records.values():
            label = record.get(KIND_KEY)
            if isinstance(label, str) and label:
                return f"{kind}:{label}"
    return kind


def _round_of(group_id: str) -> int | None:
    try:
        return int(group_id)
    except (TypeError, ValueError):
        return None


class MessageLog:
    """Everything that crossed a holder boundary during a run, in order.

    Thread-safe: Flower's legacy server sends to clients from a thread pool.

    Examples
    --------
    >>> log = MessageLog()
    >>> log.add_external("bank", "tax", "psi.request", nbytes=1024)
    >>> log.bytes_sent()
    1024
    """

    def __init__(self, records: Iterable[MessageRecord] = ()) -> None:
        self._records: list[MessageRecord] = list(records)
        self._lock = threading.Lock()

    def append(self, record: MessageRecord) -> None:
        with self._lock:
            self._records.append(record)

    def record_message(
        self, message: Message, sender: str, receiver: str, kind: str | None = None, nbytes: int | None = None
    ) -> MessageRecord:
        """Log a Flower ``Message`` (size measured here unless given)."""
        record = MessageRecord(
            round=_round_of(message.metadata.group_id),
            sender=sender,
            receiver=receiver,
            kind=kind if kind is not None else message_kind(message),
            arrays=message_arrays(message.content if message.has_content() else None),
            nbytes=message_nbytes(message) if nbytes is None else nbytes,
            error=message.error.reason if message.has_error() else None,
        )
        self.append(record)
        return record

    def add_external(
        self,
        sender: str,
        receiver: str,
        kind: str,
        nbytes: int,
        arrays: Sequence[ArraySpec] = (),
        round: int | None = None,
    ) -> MessageRecord:
        """Log something that crossed a boundary outside Flower messages (e.g. a PSI transcript)."""
        record = MessageRecord(
            round=round,
            sender=sender,
            receiver=receiver,
            kind=kind,
            arrays=[(str(n), tuple(int(s) for s in shape), str(dt)) for n, shape, dt in arrays],
            nbytes=int(nbytes),
        )
        self.append(record)
        return record

    @property
    def records(self) -> list[MessageRecord]:
        """A copy of the records, in the order they were logged."""
        with self._lock:
            return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def bytes_sent(self, sender: str | None = None) -> int:
        """Total bytes on the wire (optionally only those sent by ``sender``)."""
        return sum(r.nbytes for r in self.records if sender is None or r.sender == sender)

    def by_kind(self) -> dict[str, dict[str, int]]:
        """``{kind: {"messages": n, "bytes": b}}``."""
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            entry = out.setdefault(r.kind, {"messages": 0, "bytes": 0})
            entry["messages"] += 1
            entry["bytes"] += r.nbytes
        return out

    def summary(self) -> dict:
        """Counts and bytes in total, by kind, by sender and by link (``"sender->receiver"``)."""
        records = self.records
        by_sender: dict[str, dict[str, int]] = {}
        by_link: dict[str, dict[str, int]] = {}
        for r in records:
            for table, key in ((by_sender, r.sender), (by_link, f"{r.sender}->{r.receiver}")):
                entry = table.setdefault(key, {"messages": 0, "bytes": 0})
                entry["messages"] += 1
                entry["bytes"] += r.nbytes
        rounds = [r.round for r in records if r.round is not None]
        return {
            "messages": len(records),
            "bytes": sum(r.nbytes for r in records),
            "errors": sum(r.error is not None for r in records),
            "rounds": max(rounds) if rounds else 0,
            "by_kind": self.by_kind(),
            "by_sender": by_sender,
            "by_link": by_link,
        }

    def to_jsonl(self, path: str | Path) -> Path:
        """Write one JSON object per record (atomically: a reader never sees half a log)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for r in self.records:
                fh.write(json.dumps(r.to_dict()) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def from_jsonl(cls, path: str | Path) -> MessageLog:
        with Path(path).open(encoding="utf-8") as fh:
            return cls(MessageRecord.from_dict(json.loads(line)) for line in fh if line.strip())
