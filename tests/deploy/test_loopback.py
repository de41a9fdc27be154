"""Flower's deployment engine on 127.0.0.1, the way it runs across machines: a SuperLink with TLS and
SuperNode authentication, each holder's SuperNode (plus its long-lived ClientApp executor) in the holder's
own working directory with only its own table, PSI between the nodes, warm rounds.

One federation serves every test in this module (start-up is most of the cost); the tests that start
their own (killed nodes, cold ClientApps, horizontal) are slow.
"""

from __future__ import annotations

import contextlib
import copy
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
from fedrisk.deploy.experiment import SMALL_VERTICAL, compare_outcomes, federated_outcome, run_experiment_on
from fedrisk.federation.deploy import psi as node_psi
from fedrisk.federation.deploy.certificates import make_server_certificates
from fedrisk.federation.deploy.engines import FederationEngine, LoopbackEngine
from fedrisk.federation.deploy.loopback import (
    DeploymentError,
    LoopbackFederation,
    LoopbackOptions,
    listening_ports,
    tagged_pids,
)
from fedrisk.federation.deploy.remote import Captured, CaptureEngine
from fedrisk.federation.deploy.supernode import NodeArgs, PreflightError, preflight

CONTRACT_CHECK = Path("/work/shared/checks/contract_check.py")


def _tiny(epochs: int, n_firms: int = 2000) -> dict:
    data = copy.deepcopy(SMALL_VERTICAL)
    data["world"] = {"n_firms": n_firms}
    data["training"]["epochs"] = epochs
    return data


def _capture(data: dict, workdir: Path) -> CaptureEngine:
    """The tables and run config the driver would hand to Flower (what each holder gets)."""
    config = validate(data)
    engine = CaptureEngine()
    with contextlib.suppress(Captured):
        federated_outcome(config, build_setting(config, 0), 0, workdir, engine)
    return engine


def _assert_torn_down(federation: LoopbackFederation) -> None:
    assert tagged_pids(federation.tag) == [], "a process of the federation is still running"
    assert not set(federation.ports.values()) & listening_ports(), "a port is still listening"


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> LoopbackFederation:
    root = tmp_path_factory.mktemp("loopback")
    tables = _capture(_tiny(epochs=2), root / "first-tables").parties
    federation = LoopbackFederation(root / "federation", tables, LoopbackOptions())
    with federation:
        yield federation
    _assert_torn_down(federation)


def test_vertical_run_on_warm_nodes_matches_the_simulation(
    federation: LoopbackFederation, tmp_path: Path
) -> None:
    config = validate(_tiny(epochs=2))
    setting = build_setting(config, 0)
    engine = FederationEngine(federation)
    deployed = federated_outcome(config, setting, 0, tmp_path / "deployed", engine)
    simulated = federated_outcome(config, setting, 0, tmp_path / "simulated", "inprocess")

    (run,) = engine.runs
    assert run.status == "finished:completed" and run.tls and run.node_auth
    splits = compare_outcomes(deployed, simulated)
    assert "bank/test" in splits
    for split in splits.values():
        assert split["ks_abs_diff"] == 0.0 and split["max_abs_score_diff"] < 1e-9, split
        assert split["ks_deployment"] > 0.1  # a trained model, not a constant score
    # alignment ran between the nodes (the driver saw no partner's ids; tests/deploy/test_psi_nodes.py)
    assert deployed.extra["psi_bytes"] > 0 and node_psi.SERVE in deployed.extra["messages"]["by_kind"]
    # each holder's node runs in its own directory and is given only its own table
    for party, path in federation.parties.items():
        own = federation.node_dir(party)
        assert path.is_relative_to(own) and path.exists()
        cwd = Path(os.readlink(f"/proc/{federation.processes[f'supernode-{party}'].popen.pid}/cwd"))
        assert cwd == own
    # one long-lived ClientApp process per node served every task of the run
    for party in federation.parties:
        executor = federation.processes[f"clientapp-{party}"]
        assert executor.popen.poll() is None and "query.vertical_score: completed" in executor.log.read_text()


@pytest.mark.slow
def test_experiment_on_the_deployment_writes_a_conforming_results_directory(
    federation: LoopbackFederation, tmp_path: Path
) -> None:
    data = _tiny(epochs=2)
    report = run_experiment_on(FederationEngine(federation), validate(data), data, tmp_path / "results")
    (run,) = report["runs"]
    assert run["status"] == "finished:completed" and report["complete"]
    assert report["max_ks_abs_diff"] == 0.0
    if CONTRACT_CHECK.exists():
        check = subprocess.run([sys.executable, str(CONTRACT_CHECK), str(tmp_path / "results")], text=True,
                               capture_output=True)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr


def test_a_table_missing_on_its_node_fails_the_run_by_name(
    federation: LoopbackFederation, tmp_path: Path
) -> None:
    captured = _capture(_tiny(epochs=1, n_firms=1200), tmp_path / "driver")
    federation.place(captured.parties)
    federation.parties["tax"].unlink()
    try:
        with pytest.raises(DeploymentError) as info:
            federation.run(captured.run_config)
    finally:
        federation.place({"tax": captured.parties["tax"]})
    message = str(info.value)
    assert "client 'tax'" in message and "no party table at" in message and "data-path" in message


def test_the_real_superlinks_certificate_is_checked_by_the_node_preflight(
    federation: LoopbackFederation, tmp_path: Path
) -> None:
    link = f"127.0.0.1:{federation.ports['superlink']}"
    table = federation.parties["tax"]
    right = federation.workdir / "pki" / "ca.crt"
    other = make_server_certificates(tmp_path / "other", hosts=("127.0.0.1",)).ca_cert
    config = f"party='tax' data-path='{table}'"
    preflight(
        NodeArgs.parse(["--superlink", link, "--root-certificates", str(right), "--node-config", config])
    )
    with pytest.raises(PreflightError, match="does not verify"):
        preflight(
            NodeArgs.parse(["--superlink", link, "--root-certificates", str(other), "--node-config", config])
        )
    node = [sys.executable, "-m", "fedrisk.federation.deploy.supernode", "--"]
    node += ["--superlink", link, "--root-certificates", str(other), "--node-config", config]
    done = subprocess.run(node, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: supernode 'tax': the SuperLink at 127.0.0.1:")


# --- slow: federations of their own -----------------------------------------------------------------------


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
            _assert_torn_down(federation)


@pytest.mark.slow
def test_cold_clientapps_give_the_same_scores(tmp_path: Path) -> None:
    """Flower's stock SuperNode (a fresh ``flwr-clientapp`` per message) still works and agrees."""
    data = _tiny(epochs=1, n_firms=1200)
    watch = _Watch()
    engine = LoopbackEngine(tmp_path / "deployment", LoopbackOptions(warm=False), on_started=watch)
    report = run_experiment_on(engine, validate(data), data, tmp_path / "results")
    watch.assert_torn_down()
    for split in report["comparison"][0]["splits"].values():
        assert split["ks_abs_diff"] == 0.0, split


@pytest.mark.slow
def test_horizontal_run_on_warm_nodes_matches_the_simulation(tmp_path: Path) -> None:
    data = {
        "topology": "horizontal",
        "seeds": [0],
        "world": {"n_firms": 3000, "n_banks": 3},
        "training": {"batch_size": 256},
        "federation": {"horizontal": {"rounds": 2, "local_epochs": 1}},
        "evaluation": {"n_bootstrap": 50},
    }
    watch = _Watch()
    engine = LoopbackEngine(tmp_path / "deployment", LoopbackOptions(), on_started=watch)
    report = run_experiment_on(engine, validate(data), data, tmp_path / "results")
    watch.assert_torn_down()
    for split in report["comparison"][0]["splits"].values():
        assert split["ks_abs_diff"] <= 1e-6, split


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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "once_received"),
    [(signal.SIGTERM, "query.vertical_setup"), (signal.SIGKILL, None)],
    ids=["stopped-during-setup", "crashed-at-start"],
)
def test_killed_supernode_fails_the_run_by_name(tmp_path: Path, sig: signal.Signals, once_received) -> None:
    """SIGTERM: the node leaves the federation and the ServerApp itself names the party. SIGKILL: the
    SuperLink would notice only after two heartbeat intervals (60 s); the loopback names the dead process
    at once, stops the run and leaves nothing behind."""
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


@pytest.mark.slow
def test_a_node_whose_table_is_missing_stops_the_start_by_name(tmp_path: Path) -> None:
    tables = _capture(_tiny(epochs=1, n_firms=800), tmp_path / "driver").parties
    tables["tax"] = tmp_path / "nowhere" / "tax.parquet"
    federation = LoopbackFederation(tmp_path / "federation", tables, LoopbackOptions())
    with pytest.raises(DeploymentError) as info, federation:
        pass
    _assert_torn_down(federation)
    message = str(info.value)
    assert "supernode-tax" in message and "its table is missing" in message and "fix:" in message
