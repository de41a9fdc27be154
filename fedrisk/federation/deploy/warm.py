"""A long-lived ClientApp executor for a SuperNode started with ``--isolation process``.

Why: in Flower 1.41 every message to a SuperNode is a *task*, and each task gets a fresh process.
``flwr-clientapp`` pulls exactly one task input and exits (``flwr/supernode/runtime/run_clientapp.py``:
one ``pull_task_input`` then ``flwr_exit``), and ``flower-superexec`` launches one such process per task
(``flwr/supercore/superexec/run_superexec.py``: ``AcquireTask`` -> ``plugin.launch_task``).
``--isolation process`` only moves the SuperExec out of the SuperNode. Each fresh process re-imports
Python, torch, flwr and fedrisk (3-4 s here) before it does any work; Flower's warm executor pools serve
agent/model/connector tasks only (``flwr/supercore/warm_executor_constants.py``), not ClientApps.

This module is the one piece Flower lacks: the same two halves in one process that stays up. It claims
ClientApp tasks from the SuperNode's Runtime API with Flower's own ``AcquireTask`` request, and runs each
task with Flower's own task functions (``pull_task_input``, ``push_message``, ``push_task_output`` from
``flwr.supernode.runtime.run_clientapp``), a per-task token and heartbeat, exactly as ``flwr-clientapp``
does, minus the process start. What is hand-written is the loop and the per-FAB cache of the loaded
ClientApp; the imported apps and fedrisk's per-process caches (tables, holder models) survive between
messages, so the second message of a run already finds its table in memory.

The ClientApp object itself is what Flower's loader returns (``load_app`` imports the module once and
then returns the module attribute), i.e. the same object for every task; fedrisk keeps its state in
``context.state`` (the SuperNode's copy travels with every task) and in module-level caches.

Start one per SuperNode, next to it::

    flower-supernode --isolation process --host 127.0.0.1 --port 9094 ...
    python -m fedrisk.federation.deploy.warm --runtime-api-address 127.0.0.1:9094 --insecure

Code changes in the Flower App need a restart of this process (a fresh ``flwr-clientapp`` would import
the FAB's code; this one keeps the modules it imported first).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: Modules imported before the first task, so the first message of a run costs no import.
DEFAULT_PRELOAD = (
    "fedrisk.federation.deploy.apps",
    "fedrisk.federation.vertical_client",
    "fedrisk.federation.horizontal_client",
)

logger = logging.getLogger("fedrisk.warm")


class WarmExecutor:
    """Claims the SuperNode's ClientApp tasks and runs each in this process.

    Parameters
    ----------
    runtime_api_address : str
        The SuperNode's Runtime API (``flower-supernode --host/--port``), ``host:port``.
    insecure : bool, default=True
        Plain HTTP to the Runtime API (the SuperNode serves it without TLS unless given ``--ssl-*``).
    root_certificates : bytes, optional
        CA certificate (PEM) for a Runtime API served with TLS.
    min_interval, max_interval : float
        Seconds between task polls right after a task, and the ceiling they back off to while idle
        (within 10 s of a task the ceiling is 20 ms: a run is going on).
    """

    def __init__(
        self,
        runtime_api_address: str,
        *,
        insecure: bool = True,
        root_certificates: bytes | None = None,
        min_interval: float = 0.005,
        max_interval: float = 0.2,
    ) -> None:
        self.address = runtime_api_address
        self.insecure = insecure
        self.root_certificates = root_certificates
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.tasks = 0
        self._apps: dict[str, object] = {}
        self._stop = threading.Event()

    # --- Flower's clients ---------------------------------------------------------------------------
    def _client(self, token: str | None = None) -> object:
        from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient

        interceptors: list = [
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp" if token else "SuperExec")
        ]
        if token:
            interceptors.append(RuntimeTokenHttpInterceptor(token))
        cls = _timed_client_class() if os.environ.get("FEDRISK_WARM_PROFILE") else RuntimeHttpClient
        return cls.from_server_address(
            server_address=self.address,
            insecure=self.insecure,
            root_certificates=self.root_certificates,
            interceptors=interceptors,
            retry_invoker=make_simple_http_retry_invoker(),
        )

    def _client_app(self, run: object, fab: object) -> Callable:
        """The ClientApp of this FAB: installed and loaded once per FAB hash, by Flower's own loader."""
        app = self._apps.get(fab.hash_str)
        if app is None:
            from flwr.cli.install import install_from_fab
            from flwr.clientapp.utils import get_load_client_app_fn

            install_from_fab(fab.content, skip_prompt=True)
            load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
            app = self._apps[fab.hash_str] = load(run.fab_id, run.fab_version, fab.hash_str)
        return app

    # --- one task -----------------------------------------------------------------------------------
    def run_task(self, token: str) -> bool:
        """Run the task ``token`` names, as ``flwr-clientapp`` would; True if the ClientApp succeeded."""
        from flwr.app import Error, Message
        from flwr.clientapp.client_app import LoadClientAppError
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
        from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

        started = time.perf_counter()
        client = self._client(token)
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message = context = reply = None
        sub_status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        marks = [started]
        try:
            message, context, run, fab = pull_task_input(client)
            marks.append(time.perf_counter())
            reply = self._client_app(run, fab)(message=message, context=context)
            marks.append(time.perf_counter())
            sub_status, details = SubStatus.COMPLETED, ""
        except Exception as ex:  # the reply carries the error, as flwr-clientapp's does
            code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            reason = f"{type(ex)}:<'{ex}'>"
            if isinstance(ex, LoadClientAppError):
                code, reason = ErrorCode.LOAD_CLIENT_APP_EXCEPTION, f"loading the ClientApp failed: {ex}"
            logger.exception("ClientApp raised an exception")
            details = reason
            if message is not None:
                reply = Message(Error(code=code, reason=reason), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
            finally:
                push_task_output(client=client, context=context, sub_status=sub_status, details=details)
                heartbeat.stop()
                client.close()
        self.tasks += 1
        marks.append(time.perf_counter())
        logger.info(
            "task %d %s: %s in %.3f s (%s)",
            self.tasks,
            message.metadata.message_type if message is not None else "?",
            sub_status,
            marks[-1] - started,
            " / ".join(f"{b - a:.3f}" for a, b in zip(marks, marks[1:], strict=False)),
        )
        return sub_status == SubStatus.COMPLETED

    # --- the loop -----------------------------------------------------------------------------------
    def serve(self, max_tasks: int | None = None) -> None:
        """Claim and run ClientApp tasks until `stop` (or ``max_tasks`` tasks)."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType

        from fedrisk.federation.deploy.polling import Backoff, PollingUnsupported, shorten_clientapp_pulls

        try:
            shorten_clientapp_pulls()  # the task is claimable before its objects reach the SuperNode
        except PollingUnsupported as error:
            logger.warning("keeping Flower's object-pull back-off: %s", error)
        client = self._client()
        backoff = Backoff(self.min_interval, self.max_interval, hot_max=min(0.02, self.max_interval))
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        try:
            while not self._stop.is_set() and (max_tasks is None or self.tasks < max_tasks):
                res = client.AcquireTask(request)
                if res.HasField("task") and res.token:
                    self.run_task(res.token)
                    backoff.reset()
                    continue
                self._stop.wait(backoff.next())
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()


def _timed_client_class() -> type:
    """A Runtime API client that logs every call's latency (``FEDRISK_WARM_PROFILE=1``: where a task's
    seconds go; this is how Flower's 1 s object-pull back-off was found)."""
    from flwr.supercore.runtime import RuntimeHttpClient

    class Timed(RuntimeHttpClient):
        def _unary_unary(self, *, path, rpc_method, request, response_type, timeout=None):  # noqa: ANN001, ANN202
            started = time.perf_counter()
            try:
                return super()._unary_unary(
                    path=path,
                    rpc_method=rpc_method,
                    request=request,
                    response_type=response_type,
                    timeout=timeout,
                )
            finally:
                if not path.endswith("acquire-task"):
                    logger.info(
                        "  %s %.1f ms", path.rsplit("/", 1)[-1], 1e3 * (time.perf_counter() - started)
                    )

    return Timed


def preload(modules: Sequence[str]) -> float:
    """Import ``modules`` now; seconds it took."""
    started = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    return time.perf_counter() - started


def _watch_pid(pid: int, on_gone: Callable[[], None]) -> None:
    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                on_gone()
                return
            except PermissionError:
                pass
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedrisk.federation.deploy.warm", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API host:port")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP to the Runtime API")
    parser.add_argument("--root-certificates", type=Path, default=None, help="CA (PEM) of a TLS Runtime API")
    parser.add_argument("--min-interval", type=float, default=0.005, help="poll interval after a task (s)")
    parser.add_argument("--max-interval", type=float, default=0.2, help="poll interval when idle (s)")
    parser.add_argument(
        "--preload", action="append", default=None, help="module to import at start (repeatable)"
    )
    parser.add_argument("--supernode-pid", type=int, default=None, help="exit when this process ends")
    args = parser.parse_args(argv)
    if not args.insecure and args.root_certificates is None:
        parser.error("give --root-certificates for a TLS Runtime API, or --insecure")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import fedrisk  # noqa: F401 - Flower's environment defaults before flwr is imported

    seconds = preload(args.preload or DEFAULT_PRELOAD)
    logger.info("preloaded in %.2f s; serving ClientApp tasks of %s", seconds, args.runtime_api_address)
    executor = WarmExecutor(
        args.runtime_api_address,
        insecure=args.insecure,
        root_certificates=None if args.root_certificates is None else args.root_certificates.read_bytes(),
        min_interval=args.min_interval,
        max_interval=args.max_interval,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: executor.stop())
    if args.supernode_pid is not None:
        _watch_pid(args.supernode_pid, executor.stop)
    executor.serve()
    logger.info("stopped after %d tasks", executor.tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
