"""The Flower apps that ``flwr run`` starts on the deployment engine: fedrisk's own, picked by run config.

``[tool.flwr.app.components]`` names one ServerApp and one ClientApp per Flower App, but fedrisk has two
topologies; these module-level objects dispatch on the run config that the preparation step writes
(``vertical-plan`` set: vertical; ``fedrisk-horizontal`` set: horizontal) to exactly the apps the simulation
runs (`fedrisk.federation.vertical_server`, `fedrisk.federation.vertical_client`, `fedrisk.federation.horizontal_server`,
`fedrisk.federation.horizontal_client`), wrapped the same way as in simulation (`recorded_server_app`,
`PartyClientApp`): the message log, the completion marker and the party query are shared code.

Three pieces of glue are deployment-only:

- PSI between the holders' own nodes (`fedrisk.federation.deploy.psi`): when the run config says so, the
  vertical ServerApp first aligns the holders by PSI messages; the ClientApp answers them.

- `PollingGrid`: Flower 1.41's deployment grid waits a fixed 3 s between polls for replies
  (``flwr/superlink/grid/http_grid.py``), which would make every split-learning round trip cost >= 3 s.
  It re-implements ``send_and_receive`` on the grid's own ``push_messages``/``pull_messages`` with a short
  back-off, and turns the SuperLink's "node unavailable"/"message unavailable" replies into errors from
  the node that was asked, so `RecordingGrid` names the party that went away.
- a failure file (``federation-failed.json``) in ``output-dir`` when the ServerApp raises: the driver of a
  deployment sees only files and the run status, and "the run failed" must say which holder failed.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import traceback
from collections.abc import Iterable
from pathlib import Path

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid, ServerApp

from fedrisk.config.horizontal import HorizontalJob
from fedrisk.core.errors import FedriskError
from fedrisk.federation.backends import OUTPUT_DIR_KEY, PartyClientApp, recorded_server_app
from fedrisk.federation.channel import ClientFailure
from fedrisk.federation.deploy.polling import PollingUnsupported, shorten_grid_pulls
from fedrisk.federation.grids import DelegatingGrid
from fedrisk.federation.vertical_server import PLAN_KEY

FAILURE_FILE = "federation-failed.json"
HORIZONTAL_KEY = HorizontalJob.RUN_CONFIG_KEY

#: Error codes the SuperLink uses when a reply will never come (the node left, or the message expired).
_GONE = {ErrorCode.NODE_UNAVAILABLE, ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE}


def topology_of(run_config: dict) -> str:
    """``"vertical"`` or ``"horizontal"``, from which app's settings the run config carries."""
    vertical = bool(str(run_config.get(PLAN_KEY, "")))
    horizontal = bool(str(run_config.get(HORIZONTAL_KEY, "")))
    if vertical == horizontal:
        raise FedriskError(
            "run_config",
            f"expected exactly one of '{PLAN_KEY}' (vertical) and '{HORIZONTAL_KEY}' (horizontal), "
            f"got {'both' if vertical else 'neither'}",
            "pass the run config written by `python -m fedrisk.federation.deploy prepare` (flwr run --run-config FILE)",
        )
    return "vertical" if vertical else "horizontal"


class PollingGrid(DelegatingGrid):
    """A deployment grid whose ``send_and_receive`` polls every few milliseconds instead of every 3 s.

    Parameters
    ----------
    grid : Grid
        Flower's deployment grid (or any grid).
    min_interval, max_interval : float
        Poll interval right after a push or a reply, and the ceiling it backs off to while nothing arrives.
    """

    def __init__(self, grid: Grid, min_interval: float = 0.005, max_interval: float = 0.05) -> None:
        super().__init__(grid)
        self.min_interval = min_interval
        self.max_interval = max_interval
        self._lock = threading.Lock()

    # --- the fast path --------------------------------------------------------------------------------
    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        ids = [mid for mid in self._grid.push_messages(messages) if mid]
        sent = {m.metadata.message_id: m for m in messages if m.metadata.message_id}
        waiting = set(ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = self.min_interval
        replies: list[Message] = []
        while waiting:
            got = list(self._grid.pull_messages(list(waiting)))
            for reply in got:
                replies.append(self._attribute(reply, sent))
                waiting.discard(reply.metadata.reply_to_message_id)
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            interval = self.min_interval if got else min(interval * 2, self.max_interval)
            time.sleep(interval)
        return replies

    @staticmethod
    def _attribute(reply: Message, sent: dict[str, Message]) -> Message:
        """An error the SuperLink wrote on a node's behalf, re-issued as that node's error reply."""
        request = sent.get(reply.metadata.reply_to_message_id)
        if request is None or not reply.has_error() or reply.metadata.src_node_id != SUPERLINK_NODE_ID:
            return reply
        if reply.error.code not in _GONE:
            return reply
        return Message(Error(code=reply.error.code, reason=reply.error.reason), reply_to=request)


def _write_failure(context: Context, error: BaseException) -> None:
    out = Path(str(context.run_config.get(OUTPUT_DIR_KEY, "")))
    if not str(out) or str(out) == ".":
        return
    payload: dict[str, object] = {"error": str(error), "type": type(error).__name__}
    if isinstance(error, ClientFailure):
        payload.update(party=error.party, node_id=error.node_id, kind=error.kind, reason=error.reason)
    payload["traceback"] = "".join(traceback.format_exception(error))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (FAILURE_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(out / FAILURE_FILE)


def _inner_server_app(topology: str) -> ServerApp:
    if topology == "vertical":
        from fedrisk.federation.deploy.psi import with_node_alignment
        from fedrisk.federation.vertical_server import app

        return with_node_alignment(app)
    from fedrisk.federation.horizontal_server import build_server_app

    return build_server_app()


server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    """Run the topology's ServerApp, recorded as in simulation; leave a failure file if it raises."""
    try:
        with contextlib.suppress(PollingUnsupported):
            shorten_grid_pulls()  # replies' objects: back off briefly, not from 1 s (deploy.polling)
        app = recorded_server_app(_inner_server_app(topology_of(context.run_config)))
        app(PollingGrid(grid), context)
    except BaseException as error:
        _write_failure(context, error)
        raise


class DeploymentClientApp(ClientApp):
    """One ClientApp for both topologies: the vertical holder app, or the bank app the job describes.

    The horizontal app is built from the run's `HorizontalJob` (its mods depend on SecAgg+/DP settings)
    and kept per job, so a long-lived process would not rebuild it per message.
    """

    def __init__(self) -> None:
        super().__init__()
        self._apps: dict[str, ClientApp] = {}

    def _app_for(self, context: Context) -> ClientApp:
        rc = context.run_config
        key = "vertical" if topology_of(rc) == "vertical" else str(rc[HORIZONTAL_KEY])
        app = self._apps.get(key)
        if app is None:
            if key == "vertical":
                from fedrisk.federation.vertical_client import app as inner
            else:
                from fedrisk.federation.horizontal_client import build_client_app

                inner = build_client_app(HorizontalJob.from_run_config(rc))
            app = self._apps[key] = PartyClientApp(inner)
        return app

    def __call__(self, message: Message, context: Context) -> Message:
        from fedrisk.federation.deploy import psi

        if message.metadata.message_type in psi.MESSAGE_TYPES:  # alignment between the holders' nodes
            return psi.handle(message, context)
        return self._app_for(context)(message, context)


client_app = DeploymentClientApp()
