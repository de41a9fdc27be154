"""Deployment engines on loopback federations: what a fedrisk driver takes as its backend.

`LoopbackEngine` starts a fresh federation per call; `FederationEngine` reuses one that is already up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from fedrisk.federation.deploy.loopback import LoopbackFederation, LoopbackOptions
from fedrisk.federation.deploy.runs import APP_DIR, DeploymentError, RunRecord


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

    #: Vertical runs align the holders by PSI messages between their nodes (`fedrisk.federation.deploy.psi`).
    aligns_on_nodes = True

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
        return f"LoopbackEngine(tls={self.options.tls}, node_auth={self.options.node_auth}, warm={self.options.warm})"


class FederationEngine:
    """A `fedrisk.federation.backends.Engine` on a federation that is already up: many runs, one start-up.

    Each call places the parties' tables at their nodes' data paths (`LoopbackFederation.place`) and runs
    the packaged apps; the federation stays up for the next call (tests and benchmarks share one).

    Parameters
    ----------
    federation : LoopbackFederation
        Started, with one node per party of every run it will serve.
    on_started : callable, optional
        As for `LoopbackEngine`.
    """

    aligns_on_nodes = True

    def __init__(
        self,
        federation: LoopbackFederation,
        on_started: Callable[[LoopbackFederation, int], None] | None = None,
        app_dir: str | Path = APP_DIR,
    ) -> None:
        self.federation = federation
        self.on_started = on_started
        self.app_dir = Path(app_dir)
        self.runs: list[RunRecord] = []

    def __call__(self, parties: Mapping[str, Path], run_config: Mapping[str, object]) -> None:
        if set(parties) != set(self.federation.parties):
            raise DeploymentError(
                f"this federation's nodes are {sorted(self.federation.parties)}, the run needs {sorted(parties)}"
            )
        self.federation.place(parties)
        self.runs.append(self.federation.run(run_config, self.app_dir, self.on_started))

    def __repr__(self) -> str:
        options = self.federation.options
        return f"FederationEngine(tls={options.tls}, node_auth={options.node_auth}, warm={options.warm})"
