"""A Flower ``Grid`` that delivers messages to ClientApps in this process: Flower without the engine.

Why: Flower's Ray simulation costs seconds of start-up and a polling loop per round; split learning sends
several messages per mini-batch. This Grid runs the same, unmodified ServerApp and ClientApps (Message API
or legacy ``client_fn`` + mods such as ``secaggplus_mod``) at near plain-loop speed, with what makes a
simulation honest kept intact: every message is copied through Flower's protobuf serde as it would be on
the wire, each node keeps its own ``Context`` (so ``context.state`` persists across messages), and a
ClientApp exception becomes an error reply exactly as Flower's engines make it.

Flower 1.41 has no public API for this (checked against the installed package): its one in-process
runner, ``flwr.simulation.run_simulation``, accepts only the Ray backend (``backend = "ray"`` is
fedrisk's other transport, `fedrisk.federation.backends`), and its ``InMemoryGrid`` (``flwr.superlink.grid``,
not exported) needs the simulation engine serving a LinkState on the other side. So this Grid is
hand-written on Flower's public abstract ``flwr.serverapp.Grid``; it reuses Flower's serde, ``Message``,
``Error`` and ``Run``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.app.user_config import UserConfig
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.run import Run, RunNotRunningException
from flwr.supercore.task_identity import TaskIdentity

logger = logging.getLogger(__name__)

#: First node ID handed out by `InProcessGrid.for_parties` (Flower reserves 0 and 1 for the SuperLink).
FIRST_NODE_ID = 1001
_MAX_SIZE_HINTS = 10_000


@dataclass
class _Node:
    app: ClientApp
    context: Context
    initial_run_config: dict
    lock: threading.Lock


def copy_message(message: Message) -> tuple[Message, int]:
    """A deep copy made the way the wire makes it (protobuf serde), and its serialized size in bytes.

    Measured (this machine): ~70 us for a small message, ~4 ms for 3.2 MB of arrays; ``copy.deepcopy``
    is faster for large arrays only because it shares the immutable ``bytes`` buffers, and it would
    still need the protobuf for the size, so serde is used for both.
    """
    proto = message_to_proto(message)
    return message_from_proto(proto), proto.ByteSize()


class InProcessGrid(Grid):
    """Flower ``Grid`` calling each node's ClientApp directly, synchronously, in this process.

    Parameters
    ----------
    nodes : Mapping[int, tuple[ClientApp, Context]]
        Node ID -> (its ClientApp, its Context). The Context is the node's for the whole run:
        ``node_config`` (``party``, ``data-path``), ``run_config``, and ``state`` that persists.
    run : Run, optional
        The run; default ``Run.create_empty(run_id)`` with the run ID of the first node's Context.

    Notes
    -----
    ``push_messages`` runs the ClientApp at once and keeps the (copied) reply until ``pull_messages``.
    Safe to call from several threads (Flower's legacy server does); one node handles one message at a time.
    """

    def __init__(self, nodes: Mapping[int, tuple[ClientApp, Context]], run: Run | None = None) -> None:
        if not nodes:
            raise ValueError("InProcessGrid needs at least one node")
        if SUPERLINK_NODE_ID in nodes or 0 in nodes:
            raise ValueError(f"node IDs 0 and {SUPERLINK_NODE_ID} are reserved for the server")
        self._nodes = {
            int(nid): _Node(app, ctx, dict(ctx.run_config), threading.Lock())
            for nid, (app, ctx) in nodes.items()
        }
        self._replies: dict[str, Message] = {}
        self._exceptions: dict[int, BaseException] = {}
        self._sizes: OrderedDict[str, int] = OrderedDict()  # message ID -> wire size, for RecordingGrid
        self._lock = threading.Lock()
        self._closed = False
        self.bytes_copied = 0
        self._run: Run | None = None
        first = next(iter(self._nodes.values())).context
        self.set_run(run if run is not None else Run.create_empty(run_id=first.run_id))

    @classmethod
    def for_parties(
        cls,
        client_app: ClientApp,
        parties: Mapping[str, str | Path],
        run_config: UserConfig,
        run_id: int = 1,
    ) -> InProcessGrid:
        """One node per party, IDs from `FIRST_NODE_ID` in the order given; see ``node_names``."""
        nodes = {}
        for i, (party, path) in enumerate(parties.items()):
            ctx = Context(
                run_id=run_id,
                node_id=FIRST_NODE_ID + i,
                node_config={"party": party, "data-path": str(path)},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            nodes[FIRST_NODE_ID + i] = (client_app, ctx)
        return cls(nodes, run=Run.create_empty(run_id=run_id))

    @property
    def node_names(self) -> dict[int, str]:
        """Node ID -> party name (from each node's ``node_config["party"]``, else ``"node <id>"``)."""
        return {nid: str(n.context.node_config.get("party", f"node {nid}")) for nid, n in self._nodes.items()}

    def context_of(self, node_id: int) -> Context:
        """The node's live Context (tests inspect ``state`` through it)."""
        return self._nodes[node_id].context

    def client_exception(self, node_id: int) -> BaseException | None:
        """The last exception the node's ClientApp raised (chained onto `ClientFailure` in-process)."""
        return self._exceptions.get(node_id)

    def wire_size(self, message_id: str) -> int | None:
        """Serialized size of a message this grid copied (once): spares `RecordingGrid` a second serde."""
        with self._lock:
            return self._sizes.pop(message_id, None)

    def close(self) -> None:
        """End the run: later ``get_node_ids`` raises ``RunNotRunningException``, which stops the node
        polling thread that Flower's legacy workflows leave running when they are interrupted."""
        self._closed = True

    # --- Grid API -----------------------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        if not isinstance(run, Run):
            raise TypeError(f"`run` must be an instance of Run, got {type(run).__name__}")
        if run.primary_task_id is None:
            run.primary_task_id = 1
        self._run = run
        # Message() stamps run_id/src_node_id/task_id from this process-wide identity (as run_simulation does)
        TaskIdentity.run_id = run.run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        TaskIdentity.task_id = run.primary_task_id

    @property
    def run(self) -> Run:
        return Run(**vars(cast(Run, self._run)))

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        if self._closed:
            raise RunNotRunningException("the in-process run has ended")
        return list(self._nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            node = self._nodes.get(msg.metadata.dst_node_id)
            if node is None:
                raise ValueError(
                    f"no node {msg.metadata.dst_node_id} in this grid (nodes: {list(self._nodes)})"
                )
            msg.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower's InMemoryGrid does
            delivered, size_in = copy_message(msg)
            reply = self._deliver(msg.metadata.dst_node_id, node, delivered)
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            stored, size_out = copy_message(reply)
            with self._lock:
                self._replies[msg.metadata.message_id] = stored
                self.bytes_copied += size_in + size_out
                self._sizes[msg.metadata.message_id] = size_in
                self._sizes[stored.metadata.message_id] = size_out
                while len(self._sizes) > _MAX_SIZE_HINTS:
                    self._sizes.popitem(last=False)
            ids.append(msg.metadata.message_id)
        return ids

    def _deliver(self, node_id: int, node: _Node, message: Message) -> Message:
        """Run the ClientApp like Flower's engines do: an exception becomes an error reply."""
        with node.lock:
            try:
                reply = node.app(message=message, context=node.context)
                if not isinstance(reply, Message):
                    raise TypeError(f"ClientApp returned {type(reply).__name__}, not a Message")
                if node.context.run_config != node.initial_run_config:
                    raise ValueError("The `run_config` field of the `Context` object cannot be modified")
                return reply
            except Exception as ex:  # noqa: BLE001 - reported to the server as Flower reports it
                party = node.context.node_config.get("party", node_id)
                logger.error(
                    "ClientApp of %s raised on %s", party, message.metadata.message_type, exc_info=ex
                )
                self._exceptions[node_id] = ex
                node.context.run_config = dict(node.initial_run_config)
                # Same code and reason format as Flower's simulation worker and SuperNode
                reason = str(type(ex)) + ":<'" + str(ex) + "'>"
                return Message(
                    Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message
                )

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        with self._lock:
            return [self._replies.pop(mid) for mid in list(message_ids) if mid in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        # Every push is answered at once, so there is nothing to wait for and `timeout` never bites.
        return self.pull_messages(self.push_messages(messages))
