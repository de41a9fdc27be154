"""The same vertical ServerApp/ClientApp under Flower's Ray simulation engine gives the in-process result.

Under Ray a node's messages may land on different actors, each with a copy of the node's Context, so this
also proves the holders' learning state round-trips through ``context.state``.
"""

from __future__ import annotations

import numpy as np
import pytest

import fedrisk  # noqa: F401 - sets Flower's environment before flwr is imported
from fedrisk.config.model import TrainConfig
from fedrisk.config.vertical import VerticalConfig
from fedrisk.data.splits import split_applicants
from fedrisk.data.synthetic import WorldConfig, generate_world
from fedrisk.federation.nodes import PARTY_QUERY
from fedrisk.federation.vertical import run_vertical
from fedrisk.protocol.psi import align_parties


def test_ray_backend_gives_the_in_process_result(tmp_path):
    # The default suite's one Ray test (`make test`), so kept small: equality of two engines needs no
    # statistical size; 1500 firms and 2 epochs still give several round trips and a validation per epoch.
    world = generate_world(WorldConfig(n_firms=1500), seed=7)
    splits = split_applicants(world.parties["bank"], 0.3, 0.15, seed=7)
    cfg = TrainConfig(epochs=2, batch_size=512, lr=0.05)
    vcfg = VerticalConfig(psi_parallel=False, embedding_dim=2, bottom_hidden=[4], top_hidden=[4])
    applicants = np.concatenate(list(splits.values()))
    partners = {name: t.ids for name, t in world.parties.items() if name != "bank"}
    aligned = align_parties("bank", applicants, partners, parallel=False, seed=7)  # once: not under test here
    runs = {
        backend: run_vertical(
            world.parties, "bank", splits, "mlp", cfg, vcfg, backend, tmp_path / backend, 7, aligned
        )
        for backend in ("inprocess", "ray")
    }
    inproc, ray = runs["inprocess"], runs["ray"]
    np.testing.assert_allclose(ray.scores["test"].p, inproc.scores["test"].p, atol=1e-6)
    assert [r["val_loss"] for r in ray.history] == pytest.approx(
        [r["val_loss"] for r in inproc.history], abs=1e-7
    )
    assert ray.round_trips == inproc.round_trips
    # the same vertical messages whichever engine carried them (Ray adds one party-discovery round trip)
    counts = {
        run: {k: v["messages"] for k, v in r.messages["by_kind"].items() if k != PARTY_QUERY}
        for run, r in runs.items()
    }
    assert counts["ray"] == counts["inprocess"]
