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
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from fedrisk.federation.deploy.certificates import make_node_keys, make_server_certificates
from fedrisk.federation.deploy.runs import (  # noqa: F401 - re-exported: the loopback's public names
    APP_DIR,
    CONNECTION,
    FLOWER_ENV,
    HOST,
    TAG_VARIABLE,
    DeploymentError,
    RunRecord,
    _json_out,
    _node_config,
    _port_open,
    _Process,
    free_port,
    install_table,
    listening_ports,
    reported_error,
    run_config_for_app,
    submit_and_follow,
    tagged_pids,
    with_interpreter_bin,
)


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
    warm : bool, default=True
        Warm rounds: each SuperNode runs with ``--isolation process`` and Flower's fixed 3 s / 0.5 s waits
        shortened (`fedrisk.federation.deploy.supernode`), next to a long-lived ClientApp executor
        (`fedrisk.federation.deploy.warm`) that runs every task in one process. False runs Flower's
        stock ``flower-supernode`` (a fresh ``flwr-clientapp`` process per message).
    idle_poll : tuple of float, default=(0.01, 0.5)
        Warm SuperNodes' wait after an empty pull: first, and the ceiling it backs off to.
    connect_timeout : float, default=10.0
        Seconds a warm SuperNode's launcher may take to reach the SuperLink before it gives up.
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
    warm: bool = True
    idle_poll: tuple[float, float] = (0.01, 0.5)
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.node_auth and not self.tls:
            self.node_auth = False  # Flower: "SuperNode authentication requires a secure TLS connection"


class LoopbackFederation:
    """A SuperLink and one SuperNode per party on 127.0.0.1; a context manager that always tears down.

    Parameters
    ----------
    workdir : path
        Logs, certificates, keys, each process's ``FLWR_HOME`` and run-config files go here; each party
        gets its own working directory ``nodes/<party>/`` (as its own machine would).
    parties : Mapping[str, Path]
        Party name -> its table (a file, or a bank's directory). It is copied into the party's own
        directory, ``nodes/<party>/data/<name>``, which is the only path its SuperNode is given
        (``data-path``); `place` replaces it for the next run. A missing table is not copied, and the
        node then fails to start with an error naming it.
    options : LoopbackOptions
    """

    def __init__(
        self, workdir: str | Path, parties: Mapping[str, Path], options: LoopbackOptions | None = None
    ) -> None:
        self.workdir = Path(workdir).resolve()
        sources = {name: Path(path).resolve() for name, path in parties.items()}
        #: Party -> the data path its SuperNode reads (inside the party's own directory).
        self.parties = {
            name: self.workdir / "nodes" / name / "data" / src.name for name, src in sources.items()
        }
        self._sources = sources
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
        if Path(name).is_absolute():
            return name
        candidate = Path(sys.executable).with_name(name)
        return str(candidate) if candidate.exists() else name

    def place(self, tables: Mapping[str, Path]) -> None:
        """Put each party's table at its node's data path (atomically; the nodes may be running)."""
        unknown = sorted(set(tables) - set(self.parties))
        if unknown:
            raise DeploymentError(
                f"no SuperNode for parties {unknown}; this federation has {sorted(self.parties)}"
            )
        for party, source in tables.items():
            install_table(Path(source), self.parties[party])

    def node_dir(self, party: str) -> Path:
        """The party's own working directory (its SuperNode and ClientApp processes run there)."""
        directory = self.workdir / "nodes" / party
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _spawn(self, name: str, args: Sequence[str], home: str, cwd: Path | None = None) -> _Process:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as fh:
            popen = subprocess.Popen(
                [self._bin(args[0]), *args[1:]],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(home),
                cwd=cwd or self.workdir,
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
        self.place({party: src for party, src in self._sources.items() if src.exists()})
        for party, data_path in self.parties.items():
            self.ports[f"supernode-{party}"] = port = free_port()
            args = ["--superlink", f"{HOST}:{self.ports['superlink']}"]
            args += ["--host", HOST, "--port", str(port), "--node-config", _node_config(party, data_path)]
            args += ["--root-certificates", str(self._certs.ca_cert)] if self._certs else ["--insecure"]
            if party in keys:
                args += ["--auth-supernode-private-key", str(keys[party].private_key)]
            home, cwd = f"supernode-{party}", self.node_dir(party)
            if not opts.warm:
                self._spawn(f"supernode-{party}", ["flower-supernode", *args], home=home, cwd=cwd)
                continue
            idle_min, idle_max = opts.idle_poll
            launcher = [sys.executable, "-m", "fedrisk.federation.deploy.supernode"]
            launcher += ["--idle-min", str(idle_min), "--idle-max", str(idle_max)]
            launcher += ["--connect-timeout", str(opts.connect_timeout), "--"]
            node = self._spawn(f"supernode-{party}", [*launcher, *args, "--isolation", "process"], home, cwd)
            executor = [sys.executable, "-m", "fedrisk.federation.deploy.warm", "--insecure"]
            executor += ["--runtime-api-address", f"{HOST}:{port}", "--supernode-pid", str(node.popen.pid)]
            self._spawn(f"clientapp-{party}", executor, home=home, cwd=cwd)
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
        """Raise `DeploymentError` naming the first started process that has exited (and its error line)."""
        for process in self.processes.values():
            code = process.popen.poll()
            if code is not None:
                said = reported_error(process.log)
                raise DeploymentError(
                    f"{process.name} (pid {process.popen.pid}) exited with code {code}"
                    + (f": {said}" if said else f"; see {process.log}")
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
        nodes = [p for name, p in self.processes.items() if name.startswith(("supernode-", "clientapp-"))]
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
