"""``federation.ray_address`` against a real, already running Ray cluster (a head started with ``ray start``).

The cluster here is one head on this machine, started the way docs/deployment.md tells a user to start it
on the head machine; fedrisk connects to it by address instead of starting its own Ray, and the vertical
run gives the in-process scores.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import fedrisk  # noqa: F401 - sets Flower's environment before flwr is imported
from fedrisk.config.model import TrainConfig
from fedrisk.config.vertical import VerticalConfig
from fedrisk.data.splits import split_applicants
from fedrisk.data.synthetic import WorldConfig, generate_world
from fedrisk.federation.backends import RayCluster
from fedrisk.federation.vertical import run_vertical
from fedrisk.protocol.psi import align_parties

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """``ray start --head --block`` in its own process group; ended (with every Ray process it started)."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert ray, "the ray CLI comes with flwr[simulation]"
    port = _free_port()
    # its own temp dir (short: Ray's socket paths): `ray start` leaves its address file there, which a
    # later plain ray.init() would try to join
    temp_dir = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    head = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--block",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--temp-dir",
            str(temp_dir),
        ]
        + ["--include-dashboard", "false", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the head's GCS port accepts connections once it is up
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert head.poll() is None, "ray start --head exited"
        time.sleep(0.5)
    else:
        pytest.fail("the Ray head did not come up within 60 s")
    try:
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head stops the processes it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_run_on_an_existing_ray_cluster_gives_the_in_process_result(ray_head, tmp_path):
    address, temp_dir = ray_head
    world = generate_world(WorldConfig(n_firms=1500), seed=3)
    splits = split_applicants(world.parties["bank"], 0.3, 0.15, seed=3)
    cfg = TrainConfig(epochs=2, batch_size=512, lr=0.05)
    vcfg = VerticalConfig(psi_parallel=False)
    applicants = np.concatenate(list(splits.values()))
    partners = {name: t.ids for name, t in world.parties.items() if name != "bank"}
    aligned = align_parties("bank", applicants, partners, parallel=False, seed=3)
    runs = {
        name: run_vertical(
            world.parties, "bank", splits, "logistic", cfg, vcfg, backend, tmp_path / name, 3, aligned
        )
        for name, backend in (("inprocess", "inprocess"), ("cluster", RayCluster(address)))
    }
    np.testing.assert_allclose(
        runs["cluster"].scores["test"].p, runs["inprocess"].scores["test"].p, atol=1e-6
    )
    assert runs["cluster"].round_trips == runs["inprocess"].round_trips
    # this process joined the head's session as a driver (it did not start a Ray of its own)
    assert list(temp_dir.glob(f"session_*/logs/python-core-driver-*_{os.getpid()}.log"))
