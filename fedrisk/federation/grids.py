"""Grids that wrap another Flower `Grid`: a plain pass-through, and the one that records every message.

`RecordingGrid` wraps any Flower `Grid` (in-process, Ray simulation, deployment), so the ServerApp code stays
engine-agnostic and the message log (`fedrisk.federation.channel.MessageLog`) cannot be bypassed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedrisk.federation.channel import ClientFailure, MessageLog, message_kind


class DelegatingGrid(Grid):
    """A `Grid` that hands every call to the grid it wraps; subclasses override only what they change.

    Flower has no wrapper grid, and both the recording channel and the deployment's fast-polling grid
    need one (hand-written pass-through, nothing more).
    """

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    @property
    def inner(self) -> Grid:
        """The wrapped grid."""
        return self._grid

    def set_run(self, run: Run) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        return self._grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def get_nodes(self) -> Iterable:
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)


class RecordingGrid(DelegatingGrid):
    """A Flower ``Grid`` that logs every message pushed and pulled through the grid it wraps.

    Works with any Grid (``InProcessGrid``, the Ray simulation's, the deployment's): Flower's workflows
    (``DefaultWorkflow``, ``SecAggPlusWorkflow``) and Message-API strategies only ever call
    ``send_and_receive``/``push_messages``/``pull_messages``, all of which pass through here.

    Parameters
    ----------
    grid : Grid
        The grid that actually carries the messages.
    log : MessageLog
        Where records go.
    node_names : dict[int, str]
        Party name of each node ID (unknown nodes are logged as ``"node <id>"``).
    server_name : str
        Name of the ServerApp's side in the log.
    fail_on_error : bool
        Raise `ClientFailure` when a reply carries an error, or when ``send_and_receive`` returns fewer
        replies than messages sent. Failures are also kept in ``failures``, so a driver can still fail a
        run whose ServerApp swallowed the exception (Flower's legacy server catches client exceptions).
    """

    def __init__(
        self,
        grid: Grid,
        log: MessageLog,
        node_names: Mapping[int, str],
        server_name: str = "server",
        fail_on_error: bool = True,
    ) -> None:
        super().__init__(grid)
        self.log = log
        self.node_names = dict(node_names)
        self.server_name = server_name
        self.fail_on_error = fail_on_error
        self.failures: list[ClientFailure] = []
        self._kinds: dict[str, str] = {}  # message_id -> kind, so replies inherit their request's kind
        self._lock = threading.Lock()

    def name_of(self, node_id: int) -> str:
        return self.node_names.get(node_id, f"node {node_id}")

    # --- recorded traffic ---------------------------------------------------------------------------
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        ids = list(self._grid.push_messages(messages))
        self._record_sent(messages)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._grid.pull_messages(message_ids))
        self._record_received(replies)
        self._check(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self._record_sent(messages)
        self._record_received(replies)
        self._check(replies, expected=messages)
        return replies

    def _size_hint(self, message: Message) -> int | None:
        """The wrapped grid's measurement of this message, if it made one (`InProcessGrid` does)."""
        hint = getattr(self._grid, "wire_size", None)
        return hint(message.metadata.message_id) if hint is not None and message.metadata.message_id else None

    def _record_sent(self, messages: list[Message]) -> None:
        for msg in messages:
            rec = self.log.record_message(
                msg, self.server_name, self.name_of(msg.metadata.dst_node_id), nbytes=self._size_hint(msg)
            )
            if msg.metadata.message_id:
                with self._lock:
                    self._kinds[msg.metadata.message_id] = rec.kind

    def _record_received(self, replies: list[Message]) -> None:
        for msg in replies:
            with self._lock:
                request_kind = self._kinds.pop(msg.metadata.reply_to_message_id, None)
            own = message_kind(msg)
            kind = own if own != msg.metadata.message_type or request_kind is None else request_kind
            self.log.record_message(
                msg,
                self.name_of(msg.metadata.src_node_id),
                self.server_name,
                kind=kind,
                nbytes=self._size_hint(msg),
            )

    def _check(self, replies: list[Message], expected: list[Message] | None = None) -> None:
        found: list[ClientFailure] = []
        for msg in replies:
            if msg.has_error():
                node = msg.metadata.src_node_id
                found.append(
                    ClientFailure(self.name_of(node), node, msg.metadata.message_type, msg.error.reason or "")
                )
        if expected is not None:
            answered = {m.metadata.reply_to_message_id for m in replies}
            for msg in expected:
                if msg.metadata.message_id not in answered:
                    node = msg.metadata.dst_node_id
                    found.append(
                        ClientFailure(
                            self.name_of(node), node, msg.metadata.message_type, "no reply (timed out)"
                        )
                    )
        if not found:
            return
        with self._lock:
            self.failures.extend(found)
        if self.fail_on_error:
            cause = getattr(self._grid, "client_exception", lambda _node: None)(found[0].node_id)
            raise found[0] from cause
