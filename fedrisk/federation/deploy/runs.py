"""Running fedrisk's Flower App on a deployment, whoever started it: submit, follow, and clean up.

Shared by the loopback federation (`fedrisk.federation.deploy.loopback`, which also starts the
SuperLink and SuperNodes) and the connection to an existing SuperLink (`fedrisk.federation.deploy.remote`):

- `submit_and_follow`: ``flwr run`` with the driver's run config (checked against the app's declared
  keys), ``flwr log --stream`` into a file, and the run's end: completed, failed with the ServerApp's own
  report (``federation-failed.json``), or a service that died;
- process bookkeeping for anything started here: free ports, a tag in each process's environment so
  teardown finds every descendant, listening ports, tables copied to a node's own data path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import tomli
import tomli_w

from fedrisk.federation.deploy.apps import FAILURE_FILE

#: The repository root: its pyproject.toml is the Flower App (``[tool.flwr.app]``).
APP_DIR = Path(__file__).resolve().parents[3]
CONNECTION = "loopback"
HOST = "127.0.0.1"
TAG_VARIABLE = "FEDRISK_LOOPBACK_TAG"

#: Flower's environment for every process started here (no telemetry, no update check, no ``uv sync``).
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}
#: Seconds a run whose ServerApp reported a failure may take to end by itself before it is stopped.
FAILED_RUN_GRACE = 3.0
_RUN_ID = re.compile(r"Successfully started run (\d+)")
_PARTY_KEYS = re.compile(r"^party-\d+(-data-path)?$")


class DeploymentError(RuntimeError):
    """The deployment could not start, or its run did not complete; the message says which part failed."""


@dataclass
class RunRecord:
    """One ``flwr run`` on a loopback federation: what ran, how long, how it ended."""

    run_id: int
    status: str
    seconds: float
    tls: bool | None = None
    node_auth: bool | None = None
    ports: dict[str, int] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    tag: str | None = None
    startup_seconds: float | None = None
    info: dict = field(default_factory=dict)
    """What ``flwr ls --format json`` reports for the finished run (traffic, compute seconds)."""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen
    log: Path


def with_interpreter_bin(path: str) -> str:
    """``PATH`` with this interpreter's bin directory first: Flower starts ``flower-superexec``,
    ``flwr-serverapp`` and ``flwr-clientapp`` by name, and a venv need not be activated."""
    bin_dir = str(Path(sys.executable).parent)
    return os.pathsep.join([bin_dir, *[p for p in path.split(os.pathsep) if p and p != bin_dir]])


def free_port(host: str = HOST) -> int:
    """A port the OS reports free right now (bind to 0 and read it back; the caller binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _json_out(text: str) -> dict:
    """The JSON object ``flwr ... --format json`` printed (ignoring anything printed around it)."""
    start = text.find("{")
    if start < 0:
        raise ValueError(f"no JSON in: {text[-500:]!r}")
    return json.JSONDecoder().raw_decode(text[start:])[0]


def _node_config(party: str, data_path: Path) -> str:
    for value in (party, str(data_path)):
        if "'" in value or '"' in value:
            raise DeploymentError(
                f"party name or data path with a quote cannot go into --node-config: {value!r}"
            )
    return f"party='{party}' data-path='{data_path}'"


def install_table(source: Path, target: Path) -> Path:
    """Copy a table (file or directory) to ``target``, replacing what was there; fresh mtimes, so the
    nodes' table caches (keyed by path, mtime and size) see a new table."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    if source.is_dir():
        shutil.copytree(source, tmp, copy_function=shutil.copyfile)
    else:
        shutil.copyfile(source, tmp)
    if target.is_dir():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def reported_error(log: Path) -> str | None:
    """The last ``error: ...`` line a fedrisk launcher wrote to ``log`` (without the prefix), if any."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    said = [line[len("error: ") :] for line in lines if line.startswith("error: ")]
    return said[-1] if said else None


def tagged_pids(tag: str) -> list[int]:
    """PIDs of live processes whose environment carries ``tag`` (processes whose environment psutil may
    read: this user's)."""
    found = []
    for proc in psutil.process_iter(["pid", "status", "environ"]):  # unreadable fields come back as None
        environ = proc.info["environ"] or {}
        if proc.info["status"] != psutil.STATUS_ZOMBIE and environ.get(TAG_VARIABLE) == tag:
            found.append(int(proc.info["pid"]))
    return sorted(found)


def listening_ports() -> set[int]:
    """Ports with a listening TCP socket (IPv4 or IPv6) on this host."""
    return {
        conn.laddr.port
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr
    }


def run_info(flwr: Callable[..., str], run_id: int, connection: str = CONNECTION, wait: float = 15.0) -> dict:
    """The run as ``flwr ls`` reports it (status, traffic, ServerApp/ClientApp compute seconds), waiting up
    to ``wait`` seconds for its status to become final (the log stream may end a moment earlier)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            info = _json_out(flwr("ls", connection, "--run-id", str(run_id), "--format", "json"))["runs"][0]
        except (DeploymentError, KeyError, IndexError, ValueError) as error:
            return {"status": "unknown", "error": str(error)}
        if str(info["status"]).startswith("finished") or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def reported_failure(run_config: Mapping[str, object]) -> str | None:
    """The error the ServerApp left in ``output-dir`` (`fedrisk.federation.deploy.apps`), if any."""
    path = Path(str(run_config.get("output-dir", ""))) / FAILURE_FILE
    if not path.is_file():
        return None
    return str(json.loads(path.read_text()).get("error"))


def submit_and_follow(
    flwr: Callable[..., str],
    spawn: Callable[[str, Sequence[str], str], _Process],
    run_config: Mapping[str, object],
    app_dir: Path,
    workdir: Path,
    *,
    connection: str = CONNECTION,
    dead_service: Callable[[], _Process | None] = lambda: None,
    on_started: Callable[[int], None] | None = None,
    grace: float = 20.0,
    timeout: float = 3600.0,
) -> RunRecord:
    """Submit the app with ``flwr run``, stream its log to a file, and wait for the run to end.

    Raises `DeploymentError` unless the run completed: naming a service that died (``dead_service``),
    with the ServerApp's own error when it left one, or the run's final status.
    """
    config = run_config_for_app(run_config, app_dir)
    stale = Path(str(config.get("output-dir", ""))) / FAILURE_FILE
    if str(config.get("output-dir", "")):
        stale.unlink(missing_ok=True)
    config_file = workdir / f"run-config-{uuid.uuid4().hex[:8]}.toml"
    config_file.write_text(tomli_w.dumps(config))
    started = time.perf_counter()
    out = flwr("run", str(app_dir.resolve()), connection, "--run-config", str(config_file))
    match = _RUN_ID.search(out)
    if match is None:
        raise DeploymentError(f"`flwr run` did not report a run ID: {out[-1000:]!r}")
    run_id = int(match.group(1))
    streamer = spawn(f"run-{run_id}", ["flwr", "log", str(run_id), connection, "--stream"], "cli")
    if on_started is not None:
        on_started(run_id)
    dead: tuple[_Process, float] | None = None
    failed_at: float | None = None
    deadline = time.monotonic() + timeout
    while streamer.popen.poll() is None:  # `flwr log --stream` returns once the run has finished
        if dead is None and (process := dead_service()) is not None:
            dead = (process, time.monotonic())
        if dead is not None and (time.monotonic() - dead[1] > grace or reported_failure(run_config)):
            break  # the ServerApp has said why (or had its chance to): do not wait for the heartbeat timeout
        if failed_at is None and reported_failure(run_config):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > FAILED_RUN_GRACE:
            break  # the ServerApp failed and said why; Flower's own wind-down need not be waited for
        if time.monotonic() > deadline:
            flwr("stop", str(run_id), connection, check=False)
            raise DeploymentError(f"run {run_id} did not finish within {timeout:.0f} s; see {streamer.log}")
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if dead is None and (process := dead_service()) is not None:  # it may have ended the log stream
        dead = (process, time.monotonic())
    link_died = dead is not None and dead[0].name == "superlink"
    info = {} if link_died else run_info(flwr, run_id, connection, wait=2.0 if failed_at else 15.0)
    status = str(info.get("status", "unknown"))
    if (dead is not None or failed_at is not None) and not link_died and not status.startswith("finished"):
        flwr("stop", str(run_id), connection, check=False)
    failure = reported_failure(run_config)
    if dead is not None:
        process = dead[0]
        raise DeploymentError(
            f"{process.name} (pid {process.popen.pid}) exited with code {process.popen.returncode} "
            f"during run {run_id}" + (f"; the ServerApp reported: {failure}" if failure else "")
        )
    if failure:
        raise DeploymentError(f"run {run_id} failed ({status}): {failure}")
    if status != "finished:completed":
        raise DeploymentError(f"run {run_id} ended with status {status!r}: see {streamer.log}")
    return RunRecord(run_id, status, seconds, logs={streamer.name: str(streamer.log)}, info=info)


def run_config_for_app(run_config: Mapping[str, object], app_dir: Path) -> dict:
    """The driver's run config restricted to the app's keys, checked (``flwr run`` rejects unknown keys).

    ``party-<i>`` entries are dropped: they locate tables under the Ray simulation, while SuperNodes know
    their own table from ``--node-config``. Paths must be absolute: the apps run in other directories.
    """
    declared = tomli.loads((app_dir / "pyproject.toml").read_text())["tool"]["flwr"]["app"].get("config", {})
    config = {k: v for k, v in run_config.items() if not _PARTY_KEYS.match(k)}
    unknown = sorted(set(config) - set(declared))
    if unknown:
        raise DeploymentError(
            f"run config keys {unknown} are not declared in [tool.flwr.app.config] of {app_dir / 'pyproject.toml'}"
        )
    for key in ("output-dir", "vertical-plan"):
        value = str(config.get(key, ""))
        if value and not Path(value).is_absolute():
            raise DeploymentError(f"run config '{key}' must be an absolute path, got {value!r}")
    return {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in config.items()}
