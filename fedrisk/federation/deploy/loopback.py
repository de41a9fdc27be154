"""A whole Flower deployment on 127.0.0.1: SuperLink, one SuperNode per holder, ``flwr run``, teardown.

Why: the deployment engine (separate processes, TLS, SuperNode authentication, the packaged app, the
SuperNodes' own ``--node-config``) must be exercised exactly as across machines, in CI and on a laptop.
Everything here drives Flower's own commands (``flower-superlink``, ``flower-supernode``, ``flwr
supernode register``, ``flwr run``, ``flwr log``, ``flwr ls``, ``flwr stop``); the hand-written part is
process bookkeeping:

- free ports are picked at run time (bind to port 0, read it back), never fixed ones;
- every process gets a fresh ``FLWR_HOME`` under the work directory and a tag in its environment, so
  teardown can find every descendant (Flower detaches the SuperLink's SuperExec into its own session)
  and end each one by PID, also when the run failed;
- a SuperNode that dies mid-run fails the run at once with its party's name (the SuperLink alone would
  wait two heartbeat intervals, 60 s, before declaring a killed node unavailable).

`LoopbackEngine` plugs this into fedrisk's drivers (`fedrisk.federation.backends.Engine`): each call
starts a federation over the parties' tables, runs the packaged apps with the driver's run config, and
tears it down.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomli
import tomli_w

from fedrisk.federation.deploy.apps import FAILURE_FILE
from fedrisk.federation.deploy.certificates import make_node_keys, make_server_certificates

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
_RUN_ID = re.compile(r"Successfully started run (\d+)")
_PARTY_KEYS = re.compile(r"^party-\d+(-data-path)?$")


class DeploymentError(RuntimeError):
    """The deployment could not start, or its run did not complete; the message says which part failed."""


@dataclass
class LoopbackOptions:
    """How the loopback federation is run.

    Parameters
    ----------
    tls : bool, default=True
        HTTPS between every client (SuperNodes, ``flwr``) and the SuperLink, with a CA and server
        certificate generated per federation. False runs ``--insecure`` (plain HTTP).
    node_auth : bool, default=True
        SuperNode authentication: the SuperLink admits only nodes whose public key was registered
        (``flwr supernode register``). Needs TLS (Flower refuses it without).
    task_poll_interval : float, default=0.05
        Seconds between the SuperExec's polls for new tasks (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``,
        Flower's default 1 s); each message to a SuperNode is a task.
    startup_timeout, run_timeout : float
        Seconds allowed for the SuperLink and nodes to come up, and for one run.
    node_death_grace : float
        Seconds a run may take to fail by itself after a SuperNode died, before it is stopped.
    """

    tls: bool = True
    node_auth: bool = True
    task_poll_interval: float = 0.05
    startup_timeout: float = 180.0
    run_timeout: float = 3600.0
    node_death_grace: float = 20.0

    def __post_init__(self) -> None:
        if self.node_auth and not self.tls:
            self.node_auth = False  # Flower: "SuperNode authentication requires a secure TLS connection"


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


def tagged_pids(tag: str) -> list[int]:
    """PIDs of live processes whose environment carries ``tag`` (this user's processes only)."""
    needle = f"{TAG_VARIABLE}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def listening_ports() -> set[int]:
    """Ports with a listening TCP socket on this host (from /proc/net/tcp and tcp6)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            next(fh)
            for line in fh:
                parts = line.split()
                if parts[3] == "0A":  # TCP_LISTEN
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


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
    deadline = time.monotonic() + timeout
    while streamer.popen.poll() is None:  # `flwr log --stream` returns once the run has finished
        if dead is None and (process := dead_service()) is not None:
            dead = (process, time.monotonic())
        if dead is not None and (time.monotonic() - dead[1] > grace or reported_failure(run_config)):
            break  # the ServerApp has said why (or had its chance to): do not wait for the heartbeat timeout
        if time.monotonic() > deadline:
            flwr("stop", str(run_id), connection, check=False)
            raise DeploymentError(f"run {run_id} did not finish within {timeout:.0f} s; see {streamer.log}")
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if dead is None and (process := dead_service()) is not None:  # it may have ended the log stream
        dead = (process, time.monotonic())
    link_died = dead is not None and dead[0].name == "superlink"
    info = {} if link_died else run_info(flwr, run_id, connection)
    status = str(info.get("status", "unknown"))
    if dead is not None and not link_died and not status.startswith("finished"):
        flwr("stop", str(run_id), connection, check=False)
    failure = reported_failure(run_config)
    if dead is not None:
        process = dead[0]
        raise DeploymentError(
            f"{process.name} (pid {process.popen.pid}) exited with code {process.popen.returncode} "
            f"during run {run_id}" + (f"; the ServerApp reported: {failure}" if failure else "")
        )
    if status != "finished:completed":
        raise DeploymentError(
            f"run {run_id} ended with status {status!r}: {failure or f'see {streamer.log}'}"
        )
    return RunRecord(run_id, status, seconds, logs={streamer.name: str(streamer.log)}, info=info)


class LoopbackFederation:
    """A SuperLink and one SuperNode per party on 127.0.0.1; a context manager that always tears down.

    Parameters
    ----------
    workdir : path
        Logs, certificates, keys, each process's ``FLWR_HOME`` and run-config files go here.
    parties : Mapping[str, Path]
        Party name -> its table (what the SuperNode's ``data-path`` points to).
    options : LoopbackOptions
    """

    def __init__(
        self, workdir: str | Path, parties: Mapping[str, Path], options: LoopbackOptions | None = None
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.parties = {name: Path(path).resolve() for name, path in parties.items()}
        self.options = options or LoopbackOptions()
        self.tag = uuid.uuid4().hex
        self.ports: dict[str, int] = {}
        self.node_ids: dict[str, int] = {}
        self.processes: dict[str, _Process] = {}
        self.logs = self.workdir / "logs"
        self.startup_seconds: float | None = None
        self._certs = None

    # --- environment -------------------------------------------------------------------------------
    def _env(self, home: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLWR_")}
        env.update(FLOWER_ENV)
        env["FLWR_HOME"] = str(self.workdir / "home" / home)
        env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(self.options.task_poll_interval)
        env[TAG_VARIABLE] = self.tag
        env["PYTHONUNBUFFERED"] = "1"
        env["PATH"] = with_interpreter_bin(env.get("PATH", ""))
        Path(env["FLWR_HOME"]).mkdir(parents=True, exist_ok=True)
        return env

    def _bin(self, name: str) -> str:
        """Flower's command from this interpreter's environment (a venv need not be activated)."""
        candidate = Path(sys.executable).with_name(name)
        return str(candidate) if candidate.exists() else name

    def _spawn(self, name: str, args: Sequence[str], home: str) -> _Process:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as fh:
            popen = subprocess.Popen(
                [self._bin(args[0]), *args[1:]],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(home),
                cwd=self.workdir,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the federation
            )
        process = _Process(name, popen, log)
        self.processes[name] = process
        return process

    def flwr(self, *args: str, timeout: float = 120.0, check: bool = True) -> str:
        """Run a ``flwr`` CLI command against this federation's SuperLink; its standard output."""
        done = subprocess.run(
            [self._bin("flwr"), *args],
            capture_output=True,
            text=True,
            env=self._env("cli"),
            cwd=self.workdir,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise DeploymentError(
                f"`flwr {' '.join(args)}` failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}"
            )
        return done.stdout

    # --- start -------------------------------------------------------------------------------------
    def start(self) -> LoopbackFederation:
        """Certificates, SuperLink, node registration, SuperNodes; returns once every node is online."""
        started = time.perf_counter()
        self.workdir.mkdir(parents=True, exist_ok=True)
        opts = self.options
        if opts.tls:
            self._certs = make_server_certificates(self.workdir / "pki", hosts=(HOST, "localhost"))
        self._start_superlink()
        self._write_cli_config()
        keys = {}
        if opts.node_auth:
            for party in self.parties:
                keys[party] = make_node_keys(self.workdir / "pki" / "nodes", party)
                out = self.flwr(
                    "supernode", "register", str(keys[party].public_key), CONNECTION, "--name", party,
                    "--format", "json",
                )  # fmt: skip
                self.node_ids[party] = int(_json_out(out)["node-id"])
        for party, data_path in self.parties.items():
            if not data_path.exists():
                raise DeploymentError(f"no table for party {party!r} at {data_path}")
            self.ports[f"supernode-{party}"] = port = free_port()
            args = ["flower-supernode", "--superlink", f"{HOST}:{self.ports['superlink']}"]
            args += ["--host", HOST, "--port", str(port), "--node-config", _node_config(party, data_path)]
            args += ["--root-certificates", str(self._certs.ca_cert)] if self._certs else ["--insecure"]
            if party in keys:
                args += ["--auth-supernode-private-key", str(keys[party].private_key)]
            self._spawn(f"supernode-{party}", args, home=f"supernode-{party}")
        self._wait_for_nodes()
        self.startup_seconds = time.perf_counter() - started
        return self

    def _start_superlink(self) -> None:
        for _attempt in range(3):  # a port picked free may be taken before the SuperLink binds it
            port = free_port()
            args = ["flower-superlink", "--host", HOST, "--port", str(port)]
            if self._certs:
                args += ["--ssl-ca-certfile", str(self._certs.ca_cert)]
                args += ["--ssl-certfile", str(self._certs.server_cert)]
                args += ["--ssl-keyfile", str(self._certs.server_key)]
            else:
                args += ["--insecure"]
            if self.options.node_auth:
                args += ["--enable-supernode-auth"]
            process = self._spawn("superlink", args, home="superlink")
            deadline = time.monotonic() + self.options.startup_timeout
            while time.monotonic() < deadline and process.popen.poll() is None and not _port_open(port):
                time.sleep(0.1)
            if process.popen.poll() is None and _port_open(port):
                self.ports["superlink"] = port
                return
            self._terminate([process])
        raise DeploymentError(f"the SuperLink did not start; see {self.logs / 'superlink.log'}")

    def _write_cli_config(self) -> None:
        entry: dict[str, object] = {"address": f"{HOST}:{self.ports['superlink']}"}
        if self._certs:
            entry["root-certificates"] = str(self._certs.ca_cert)
        else:
            entry["insecure"] = True
        config = {"superlink": {"default": CONNECTION, CONNECTION: entry}}
        home = Path(self._env("cli")["FLWR_HOME"])
        (home / "config.toml").write_text(tomli_w.dumps(config))

    def _wait_for_nodes(self) -> None:
        deadline = time.monotonic() + self.options.startup_timeout
        while True:
            self.check_alive()
            nodes = _json_out(self.flwr("supernode", "list", CONNECTION, "--format", "json")).get("nodes", [])
            online = [n for n in nodes if n.get("status") == "online"]
            if len(online) >= len(self.parties):
                return
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"only {len(online)} of {len(self.parties)} SuperNodes came online within "
                    f"{self.options.startup_timeout:.0f} s; see {self.logs}"
                )
            time.sleep(0.5)

    def check_alive(self) -> None:
        """Raise `DeploymentError` naming the first started process that has exited."""
        for process in self.processes.values():
            code = process.popen.poll()
            if code is not None:
                raise DeploymentError(
                    f"{process.name} (pid {process.popen.pid}) exited with code {code}; see {process.log}"
                )

    # --- run ---------------------------------------------------------------------------------------
    def run(
        self,
        run_config: Mapping[str, object],
        app_dir: str | Path = APP_DIR,
        on_started: Callable[[LoopbackFederation, int], None] | None = None,
    ) -> RunRecord:
        """``flwr run`` the app with ``run_config``; wait for the run to end; raise unless it completed."""

        def dead_service() -> _Process | None:
            return next((p for p in self._services() if p.popen.poll() is not None), None)

        record = submit_and_follow(
            self.flwr,
            self._spawn,
            run_config,
            Path(app_dir),
            self.workdir,
            dead_service=dead_service,
            on_started=None if on_started is None else (lambda run_id: on_started(self, run_id)),
            grace=self.options.node_death_grace,
            timeout=self.options.run_timeout,
        )
        record.tls, record.node_auth = self.options.tls, self.options.node_auth
        record.ports, record.node_ids = dict(self.ports), dict(self.node_ids)
        record.logs = {p.name: str(p.log) for p in self.processes.values()}
        record.tag, record.startup_seconds = self.tag, self.startup_seconds
        return record

    def _services(self) -> list[_Process]:
        return [p for name, p in self.processes.items() if not name.startswith("run-")]

    # --- stop --------------------------------------------------------------------------------------
    def _terminate(self, processes: Sequence[_Process], timeout: float = 10.0) -> None:
        for p in processes:
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.kill()
                p.popen.wait()

    def stop(self) -> None:
        """End every process this federation started, and their descendants, by PID."""
        runs = [p for name, p in self.processes.items() if name.startswith("run-")]
        nodes = [p for name, p in self.processes.items() if name.startswith("supernode-")]
        link = [p for name, p in self.processes.items() if name == "superlink"]
        for group in (runs, nodes, link):  # nodes leave before the link, so they deregister cleanly
            self._terminate(group)
        deadline = time.monotonic() + 10.0
        while (left := tagged_pids(self.tag)) and time.monotonic() < deadline:
            for pid in left:  # SuperExec, flwr-serverapp/clientapp: they follow their parents on their own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM if time.monotonic() < deadline - 5 else signal.SIGKILL)
            time.sleep(0.2)
        for pid in tagged_pids(self.tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> LoopbackFederation:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


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


class LoopbackEngine:
    """A `fedrisk.federation.backends.Engine`: each call runs the packaged apps on a fresh loopback federation.

    Parameters
    ----------
    workdir : path
        One subdirectory per call (``federation-<n>``) with its logs and keys.
    options : LoopbackOptions, optional
    on_started : callable, optional
        Called with the federation and run ID once ``flwr run`` has started the run (tests kill a node here).
    """

    def __init__(
        self,
        workdir: str | Path,
        options: LoopbackOptions | None = None,
        on_started: Callable[[LoopbackFederation, int], None] | None = None,
        app_dir: str | Path = APP_DIR,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.options = options or LoopbackOptions()
        self.on_started = on_started
        self.app_dir = Path(app_dir)
        self.runs: list[RunRecord] = []

    def __call__(self, parties: Mapping[str, Path], run_config: Mapping[str, object]) -> None:
        directory = self.workdir / f"federation-{len(self.runs) + 1}"
        with LoopbackFederation(directory, parties, self.options) as federation:
            self.runs.append(federation.run(run_config, self.app_dir, self.on_started))

    def __repr__(self) -> str:
        return f"LoopbackEngine(tls={self.options.tls}, node_auth={self.options.node_auth})"
