"""Run one ServerApp with one ClientApp per party: in this process, or under Flower's Ray simulation.

Why one entry point: the vertical and horizontal drivers must not care which engine carries the messages,
and whatever runs must be recorded and must fail loudly. The same two wrappers serve every engine,
including Flower's deployment engine (export ``recorded_server_app(app)`` and ``PartyClientApp(app)``
from the apps' modules):

- `recorded_server_app` wraps the driver's ServerApp: it learns which node is which party, routes the
  grid through a `RecordingGrid`, and on success writes ``messages.jsonl`` and a completion marker into
  the run config's ``"output-dir"``. The driver raises when the marker is missing, so a run that died
  without an exception cannot pass for a finished one.
- `PartyClientApp` wraps the ClientApp: it answers the party query and, under the Ray simulation, lays
  fedrisk's run config over the node's (Flower's ``run_simulation`` takes no run config; ``flwr run``
  takes it from a packaged app's pyproject.toml, which a library driver does not have).

Results flow back to the driver only through files in ``output-dir``, as they must under deployment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from flwr.app import Context, Message, RecordDict
from flwr.app.user_config import UserConfig
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedrisk.core.errors import FedriskError
from fedrisk.federation.channel import ClientFailure, MessageLog
from fedrisk.federation.grids import RecordingGrid
from fedrisk.federation.inprocess import InProcessGrid
from fedrisk.federation.nodes import PARTY_QUERY, discover_parties, party_query_reply

logger = logging.getLogger(__name__)

Backend = Literal["inprocess", "ray"]


class Engine(Protocol):
    """An engine outside this process, e.g. Flower's deployment engine (`fedrisk.federation.deploy.loopback`).

    It runs the *packaged* apps (``[tool.flwr.app.components]``, which dispatch to the same apps the
    drivers pass here) with one node per party over ``parties``' tables and ``run_config``, and leaves the
    same files in ``output-dir``; `run_federation` still checks the completion marker.
    """

    def __call__(self, parties: Mapping[str, Path], run_config: UserConfig) -> None: ...


@dataclass(frozen=True)
class RayCluster:
    """Flower's simulation engine on an existing Ray cluster (``federation.ray_address``).

    ``address`` is what ``ray.init(address=...)`` takes: ``"auto"`` (the cluster this machine joined with
    ``ray start``) or the head's ``host:port``. Every node of the cluster needs fedrisk and its
    dependencies installed, and must see the parties' table paths (a shared filesystem), as the
    ClientApps read them there.
    """

    address: str


def resolve_backend(backend: str, ray_address: str | None = None) -> Backend | RayCluster:
    """The engine a config names: ``"inprocess"``, ``"ray"`` (a local Ray) or a `RayCluster`."""
    return RayCluster(ray_address) if backend == "ray" and ray_address else backend  # type: ignore[return-value]


def ray_backend_config(num_cpus: int, client_num_cpus: int, address: str | None = None) -> dict:
    """Flower's ``backend_config`` for Ray: a local Ray with ``num_cpus``, or a connection to ``address``
    (Ray refuses ``num_cpus`` when it joins an existing cluster: the cluster has its own)."""
    init_args: dict[str, object] = {"include_dashboard": False}
    if address:
        init_args["address"] = address
    else:
        # "local", not None: without an address ray.init joins the last cluster `ray start` made on this
        # machine (its address file outlives it), so a stale cluster would hijack or break the run
        init_args.update(address="local", num_cpus=num_cpus, num_gpus=0)
    return {"client_resources": {"num_cpus": client_num_cpus, "num_gpus": 0.0}, "init_args": init_args}


OUTPUT_DIR_KEY = "output-dir"
NUM_PARTIES_KEY = "num-parties"
MESSAGE_LOG_FILE = "messages.jsonl"
COMPLETION_MARKER = "federation-complete.json"


class FederationError(RuntimeError):
    """The federation did not finish: no completion marker, or a client failure the ServerApp swallowed."""


def _flower_scalar(key: str, value: object) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise FedriskError(
        f"run_config.{key}",
        f"{type(value).__name__} is not a Flower config value",
        "use bool, int, float or str (serialise lists and dicts to a JSON string)",
    )


def federation_run_config(parties: Mapping[str, str | Path], run_config: Mapping[str, object]) -> UserConfig:
    """The run config every app sees: the driver's, plus ``party-<i>``/``party-<i>-data-path`` and
    ``num-parties`` (what a Ray-simulated node needs to find its party from its partition ID)."""
    config: UserConfig = {k: _flower_scalar(k, v) for k, v in run_config.items()}
    for i, (name, path) in enumerate(parties.items()):
        config[f"party-{i}"] = str(name)
        config[f"party-{i}-data-path"] = str(path)
    config[NUM_PARTIES_KEY] = len(parties)
    return config


class PartyClientApp(ClientApp):
    """A party's ClientApp: the driver's app, plus the party query and (under Ray) fedrisk's run config.

    Parameters
    ----------
    app : ClientApp
        The app to run (Message API or legacy ``client_fn`` with mods); it sees every other message.
    run_config : Mapping, optional
        Entries laid over the node's run config for the duration of each call (the node's own Context is
        left as Flower gave it: the simulation rejects a ClientApp that modifies ``run_config``).
    """

    def __init__(self, app: ClientApp, run_config: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self._app = app
        self._overlay = dict(run_config or {})

    def __call__(self, message: Message, context: Context) -> Message:
        view = _with_run_config(context, self._overlay) if self._overlay else context
        if message.metadata.message_type == PARTY_QUERY:
            return party_query_reply(message, view)
        try:
            return self._app(message, view)
        finally:
            context.state = view.state  # in case the app replaced (rather than mutated) its state


def _with_run_config(context: Context, overlay: Mapping[str, object]) -> Context:
    """A view of ``context`` with ``overlay`` in its run config, sharing the same ``state`` object."""
    return Context(
        run_id=context.run_id,
        node_id=context.node_id,
        node_config=context.node_config,
        state=context.state,
        run_config={**context.run_config, **overlay},
    )


def recorded_server_app(
    server_app: ServerApp,
    node_names: Mapping[int, str] | None = None,
    run_config: Mapping[str, object] | None = None,
) -> ServerApp:
    """Wrap ``server_app`` (either kind: ``@app.main`` or ``server_fn``) so its traffic is recorded.

    Parameters
    ----------
    server_app : ServerApp
        The driver's ServerApp, run unchanged on a `RecordingGrid`.
    node_names : Mapping[int, str], optional
        Node ID -> party; when None the nodes are asked (`discover_parties`, one recorded round trip).
    run_config : Mapping, optional
        Laid over the server Context's run config (Ray simulation: ``run_simulation`` passes none).
    """
    outer = ServerApp()

    @outer.main()
    def _main(grid: Grid, context: Context) -> None:
        started = time.perf_counter()
        if run_config:
            context = _with_run_config(context, run_config)
        out_dir = Path(str(context.run_config[OUTPUT_DIR_KEY]))
        log = MessageLog()
        if node_names is not None:
            names = dict(node_names)
        else:  # wait for every party: the engine registers nodes while the ServerApp starts
            names = discover_parties(
                grid, log, expected=int(context.run_config.get(NUM_PARTIES_KEY, 0)) or None
            )
        recording = RecordingGrid(grid, log, names)
        try:
            server_app(recording, context)
        finally:
            log.to_jsonl(out_dir / MESSAGE_LOG_FILE)
        if recording.failures:  # raised inside the app, but Flower's legacy server caught it
            raise recording.failures[0]
        marker = {
            "wall_seconds": time.perf_counter() - started,
            "parties": sorted(set(names.values())),
            **{k: v for k, v in log.summary().items() if k in ("messages", "bytes", "rounds")},
        }
        _write_json(out_dir / COMPLETION_MARKER, marker)

    return outer


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def read_completion(output_dir: str | Path) -> dict:
    """The completion marker of a finished run; raises `FederationError` if the run did not finish."""
    marker = Path(output_dir) / COMPLETION_MARKER
    if not marker.exists():
        raise FederationError(
            f"the federation ended without its completion marker ({marker}): the ServerApp did not finish"
        )
    return json.loads(marker.read_text())


def run_federation(
    server_app: ServerApp,
    client_app: ClientApp,
    parties: Mapping[str, Path],
    run_config: dict,
    backend: Backend | Engine,
    *,
    ray_num_cpus: int = 2,
    client_num_cpus: int = 1,
) -> None:
    """Run ``server_app`` with one ``client_app`` node per party; results are files in ``output-dir``.

    Parameters
    ----------
    server_app, client_app
        Flower apps, either API. Each ClientApp finds its own table with `nodes.resolve_party`.
    parties : Mapping[str, Path]
        Party name -> that party's table (order = partition IDs under Ray).
    run_config : dict
        Flower run config; must hold ``"output-dir"``. Party entries are added (see
        `federation_run_config`).
    backend : {"inprocess", "ray"}, RayCluster or Engine
        ``"inprocess"``: `InProcessGrid`, no engine. ``"ray"``: Flower's simulation engine on a local Ray;
        a `RayCluster`: the same on an existing cluster. An `Engine` (e.g. Flower's deployment engine)
        runs the packaged apps itself.
    ray_num_cpus, client_num_cpus
        Ray's CPU budget and each ClientApp actor's share (Ray only).

    Raises
    ------
    ClientFailure
        A ClientApp failed (its party and error are named).
    FederationError
        The ServerApp returned without finishing (no completion marker).
    FedriskError
        Bad input (no output dir, unknown backend, no parties, non-scalar run config value).
    """
    if not callable(backend) and not isinstance(backend, RayCluster) and backend not in ("inprocess", "ray"):
        raise FedriskError("federation.backend", f"unknown backend {backend!r}", "use 'inprocess' or 'ray'")
    if not parties:
        raise FedriskError("parties", "no parties to federate", "give at least one party table")
    if OUTPUT_DIR_KEY not in run_config:
        raise FedriskError(
            f"run_config.{OUTPUT_DIR_KEY}", "missing", "give the directory the ServerApp writes to"
        )
    config = federation_run_config(parties, run_config)
    out_dir = Path(str(config[OUTPUT_DIR_KEY]))
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (COMPLETION_MARKER, MESSAGE_LOG_FILE):
        (out_dir / stale).unlink(missing_ok=True)

    if callable(backend):
        backend(parties, config)
    elif backend == "inprocess":
        _run_inprocess(server_app, client_app, parties, config)
    else:
        address = backend.address if isinstance(backend, RayCluster) else None
        _run_ray(server_app, client_app, len(parties), config, ray_num_cpus, client_num_cpus, address)
    read_completion(out_dir)


def _run_inprocess(
    server_app: ServerApp, client_app: ClientApp, parties: Mapping[str, Path], config: UserConfig
) -> None:
    grid = InProcessGrid.for_parties(PartyClientApp(client_app), parties, config)
    context = Context(
        run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=dict(config)
    )
    try:
        recorded_server_app(server_app, node_names=grid.node_names)(grid, context)
    finally:
        grid.close()


def _run_ray(
    server_app: ServerApp,
    client_app: ClientApp,
    num_parties: int,
    config: UserConfig,
    ray_num_cpus: int,
    client_num_cpus: int,
    address: str | None = None,
) -> None:
    import ray  # deferred: importing Ray costs ~1 s and only this backend needs it
    from flwr.simulation import run_simulation

    backend_config = ray_backend_config(ray_num_cpus, client_num_cpus, address)
    try:
        run_simulation(
            server_app=recorded_server_app(server_app, run_config=config),
            client_app=PartyClientApp(client_app, run_config=config),
            num_supernodes=num_parties,
            backend_config=backend_config,
        )
    except ClientFailure:
        raise
    except Exception as ex:
        # run_simulation re-raises the ServerApp's exception; keep ours recognisable, wrap the rest
        if isinstance(ex.__cause__, ClientFailure):
            raise ex.__cause__ from ex
        raise
    finally:
        if ray.is_initialized():  # Flower shuts Ray down itself; this covers start-up failures
            with contextlib.suppress(Exception):
                ray.shutdown()
