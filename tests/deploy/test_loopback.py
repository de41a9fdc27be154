"""Flower's deployment engine on 127.0.0.1: the vertical experiment matches the in-process simulation, a
killed SuperNode fails the run by name, and nothing is left running or listening afterwards.

Slow: every message to a SuperNode starts a fresh ``flwr-clientapp`` process (Flower 1.41 has no warm
ClientApps), so the worlds are tiny and training is one or two full-batch epochs (a handful of round trips).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fedrisk.config.experiment import validate
from fedrisk.data.setting import build_setting
from fedrisk.deploy.experiment import SMALL_VERTICAL, federated_outcome, run_experiment_on
from fedrisk.federation.deploy.loopback import (
    DeploymentError,
    LoopbackEngine,
    LoopbackFederation,
    LoopbackOptions,
    listening_ports,
    tagged_pids,
)

pytestmark = pytest.mark.slow

CONTRACT_CHECK = Path("/work/shared/checks/contract_check.py")


def _tiny(epochs: int) -> dict:
    data = copy.deepcopy(SMALL_VERTICAL)
    data["world"] = {"n_firms": 2000}
    data["training"]["epochs"] = epochs
    return data


class _Watch:
    """Remembers every federation an engine starts, to check afterwards that each was torn down."""

    def __init__(self, then=None) -> None:
        self.federations: list[LoopbackFederation] = []
        self.then = then

    def __call__(self, federation: LoopbackFederation, run_id: int) -> None:
        self.federations.append(federation)
        if self.then is not None:
            self.then(federation, run_id)

    def assert_torn_down(self) -> None:
        assert self.federations, "no federation was started"
        for federation in self.federations:
            assert tagged_pids(federation.tag) == [], "a process of the federation is still running"
            assert not set(federation.ports.values()) & listening_ports(), "a port is still listening"


def test_loopback_vertical_run_matches_the_simulation(tmp_path: Path) -> None:
    data = _tiny(epochs=2)
    watch = _Watch()
    engine = LoopbackEngine(tmp_path / "deployment", LoopbackOptions(), on_started=watch)
    report = run_experiment_on(engine, validate(data), data, tmp_path / "results")
    watch.assert_torn_down()

    (run,) = report["runs"]
    assert run["status"] == "finished:completed" and run["tls"] and run["node_auth"]
    assert report["complete"]
    splits = report["comparison"][0]["splits"]
    assert "bank/test" in splits
    for split in splits.values():
        assert split["ks_abs_diff"] <= 0.005, split
        assert split["ks_deployment"] > 0.1  # a trained model, not a constant score
    assert json.loads((tmp_path / "results" / "deployment.json").read_text()) == json.loads(
        json.dumps(report)
    )
    if CONTRACT_CHECK.exists():
        check = subprocess.run([sys.executable, str(CONTRACT_CHECK), str(tmp_path / "results")], text=True,
                               capture_output=True)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr


def _kill(party: str, sig: signal.Signals, killed: dict, once_received: str | None):
    """Kill ``party``'s SuperNode as soon as the run has started, or once it received ``once_received``."""

    def then(federation: LoopbackFederation, _run_id: int) -> None:
        node = federation.processes[f"supernode-{party}"]

        def watch() -> None:
            while node.popen.poll() is None:
                if once_received is None or once_received in node.log.read_text(errors="ignore"):
                    os.kill(node.popen.pid, sig)
                    killed["at"] = time.monotonic()
                    return
                time.sleep(0.05)

        threading.Thread(target=watch, daemon=True).start()

    return then


@pytest.mark.parametrize(
    ("sig", "once_received"),
    [(signal.SIGTERM, "query.vertical_setup"), (signal.SIGKILL, None)],
    ids=["stopped-during-setup", "crashed-at-start"],
)
def test_killed_supernode_fails_the_run_by_name(tmp_path: Path, sig: signal.Signals, once_received) -> None:
    """SIGTERM: the node leaves the federation and the ServerApp itself names the party. SIGKILL: the
    SuperLink would notice only after two heartbeat intervals (60 s); the loopback names the dead process
    at once, stops the run and leaves nothing behind (the node's SuperExec is orphaned, not killed)."""
    config = validate(_tiny(epochs=3))
    killed: dict = {}
    watch = _Watch(then=_kill("tax", sig, killed, once_received))
    engine = LoopbackEngine(tmp_path / "deployment", LoopbackOptions(node_death_grace=8.0), on_started=watch)
    with pytest.raises(DeploymentError) as info:
        federated_outcome(config, build_setting(config, 0), 0, tmp_path / "driver", engine)
    watch.assert_torn_down()
    assert "at" in killed, "the node was never killed: the run failed for another reason"
    message = str(info.value)
    assert "supernode-tax" in message
    if sig == signal.SIGTERM:
        assert "client 'tax'" in message and "Unavailable" in message
