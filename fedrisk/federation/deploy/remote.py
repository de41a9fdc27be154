"""fedrisk's drivers on a federation that is already running, across machines (docs/deployment.md).

- `ConnectionEngine` (a `fedrisk.federation.backends.Engine`) submits the packaged apps to a SuperLink
  named in ``$FLWR_HOME/config.toml`` with ``flwr run`` and waits for the run, like `LoopbackEngine`
  minus starting anything: the holders started their SuperNodes themselves, each with its own table.
- `CaptureEngine` stops a driver just before Flower would run and keeps what it prepared (each holder's
  table, the label holder's plan, the run config). That is how ``python -m fedrisk.federation.deploy tables`` hands
  every holder exactly the table the driver would use, without a second copy of the driver's logic.

The ServerApp writes its results into the run config's ``output-dir`` on the SuperLink's machine, so the
driver that reads them (``python -m fedrisk.federation.deploy run``) runs there too (the label holder's side).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedrisk.federation.deploy.runs import (
    APP_DIR,
    FLOWER_ENV,
    DeploymentError,
    RunRecord,
    _Process,
    submit_and_follow,
    with_interpreter_bin,
)


def _flwr_bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


class ConnectionEngine:
    """Run the packaged apps on an existing SuperLink connection (``flwr run . <connection>``).

    Parameters
    ----------
    connection : str
        A SuperLink connection in ``$FLWR_HOME/config.toml`` (address, ``root-certificates`` or
        ``insecure``).
    workdir : path
        Run-config files and the streamed ServerApp log go here.
    app_dir : path
        The Flower App (this repository's root).
    timeout : float
        Seconds one run may take.
    """

    #: Vertical runs align the holders by PSI messages between their nodes (`fedrisk.federation.deploy.psi`).
    aligns_on_nodes = True

    def __init__(
        self, connection: str, workdir: str | Path, app_dir: str | Path = APP_DIR, timeout: float = 24 * 3600
    ) -> None:
        self.connection = connection
        self.workdir = Path(workdir).resolve()
        self.app_dir = Path(app_dir)
        self.timeout = timeout
        self.runs: list[RunRecord] = []

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **FLOWER_ENV, "PYTHONUNBUFFERED": "1"}
        env["PATH"] = with_interpreter_bin(env.get("PATH", ""))
        return env

    def flwr(self, *args: str, timeout: float = 120.0, check: bool = True) -> str:
        done = subprocess.run(
            [_flwr_bin("flwr"), *args], capture_output=True, text=True, env=self._env(), timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise DeploymentError(f"`flwr {' '.join(args)}` failed: {(done.stderr or done.stdout)[-2000:]}")
        return done.stdout

    def _spawn(self, name: str, args: Sequence[str], _home: str) -> _Process:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            popen = subprocess.Popen(
                [_flwr_bin(args[0]), *args[1:]], stdout=fh, stderr=subprocess.STDOUT, env=self._env(),
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        return _Process(name, popen, log)

    def __call__(self, parties: Mapping[str, Path], run_config: Mapping[str, object]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        streamers: list[_Process] = []

        def spawn(name: str, args: Sequence[str], home: str) -> _Process:
            streamers.append(process := self._spawn(name, args, home))
            return process

        try:
            record = submit_and_follow(
                self.flwr, spawn, run_config, self.app_dir, self.workdir,
                connection=self.connection, timeout=self.timeout,
            )  # fmt: skip
        finally:
            for process in streamers:  # the log stream ends with the run; on an error it may not have
                if process.popen.poll() is None:
                    process.popen.terminate()
                    process.popen.wait()
        self.runs.append(record)

    def __repr__(self) -> str:
        return f"ConnectionEngine({self.connection!r})"


class Captured(Exception):  # noqa: N818 - a signal, not an error
    """Raised by `CaptureEngine` to stop the driver once its inputs to Flower are on disk."""


class CaptureEngine:
    """Keeps the parties' tables and the run config a driver hands to Flower, then stops the driver."""

    aligns_on_nodes = True  # as the engines it stands in for: the tables do not depend on the alignment

    def __init__(self) -> None:
        self.parties: dict[str, Path] = {}
        self.run_config: dict[str, object] = {}

    def __call__(self, parties: Mapping[str, Path], run_config: Mapping[str, object]) -> None:
        self.parties = {name: Path(path) for name, path in parties.items()}
        self.run_config = dict(run_config)
        raise Captured()
