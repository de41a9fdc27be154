"""PSI between the holders' own nodes: the role-split protocol equals the one-process PSI, and the deployment
apps align by messages (run here on fedrisk's in-process grid, the same apps the SuperNodes run) so that
no partner id list reaches the label holder's driver, with training identical to the simulation's."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from fedrisk.config.experiment import validate
from fedrisk.data.setting import build_setting
from fedrisk.deploy.experiment import SMALL_VERTICAL, compare_outcomes, federated_outcome
from fedrisk.federation import backends
from fedrisk.federation.deploy import psi as node_psi
from fedrisk.federation.deploy.apps import client_app
from fedrisk.federation.vertical_server import app as vertical_server
from fedrisk.protocol import psi_roles
from fedrisk.protocol.psi import private_intersection


def _ids(prefix: str, numbers) -> np.ndarray:
    return np.array([f"{prefix}{i:06d}" for i in numbers])


def test_role_split_psi_with_shards_equals_the_one_process_psi() -> None:
    client = _ids("F", range(0, 900))
    server = _ids("F", range(600, 1500))
    expected, _ = private_intersection("bank", client, "tax", server)
    key = psi_roles.new_client_key()
    requests = psi_roles.create_requests(key, client, workers=2)  # two shards, two processes
    assert len(requests) == 2
    setup, responses, fpr, structure = psi_roles.serve(server, requests, len(client), workers=1)
    sizes = psi_roles.shard_sizes(len(client), 2)
    positions = psi_roles.intersect(key, setup, responses, sizes, workers=1)
    np.testing.assert_array_equal(client[positions], expected)
    assert len(expected) == 300 and 0 < fpr < 1e-5 and structure in ("gcs", "bloom_filter")
    # a response answered under another client's key finds nothing
    other = psi_roles.intersect(psi_roles.new_client_key(), setup, responses, sizes)
    assert len(other) < 3


def test_parallel_intersection_matches_and_counts_every_byte() -> None:
    client, server = _ids("F", range(0, 700)), _ids("F", range(350, 1000))
    ids, transcript, times = psi_roles.parallel_intersection("bank", client, "tax", server, workers=2)
    np.testing.assert_array_equal(ids, client[350:])
    assert transcript.n_client == 700 and transcript.n_server == 650
    assert transcript.bytes_client_to_server > 700 * 30  # one compressed point (33 B) per id, two requests
    assert times.request > 0 and times.intersect > 0


class _NodesInProcess:
    """The deployment's apps on fedrisk's in-process grid: an engine that aligns on the nodes."""

    aligns_on_nodes = True

    def __call__(self, parties, run_config) -> None:
        server = node_psi.with_node_alignment(vertical_server)
        backends._run_inprocess(server, client_app, parties, dict(run_config))


def test_deployment_apps_align_by_messages_and_train_as_the_simulation(tmp_path: Path, monkeypatch) -> None:
    data = copy.deepcopy(SMALL_VERTICAL) | {"world": {"n_firms": 1500}}
    config = validate(data)
    setting = build_setting(config, 0)
    simulated = federated_outcome(config, setting, 0, tmp_path / "sim", "inprocess")

    def no_driver_psi(*_args, **_kwargs):
        raise AssertionError("the driver must not align when the engine aligns on the nodes")

    monkeypatch.setattr("fedrisk.federation.vertical.align_parties", no_driver_psi)
    deployed = federated_outcome(config, setting, 0, tmp_path / "dep", _NodesInProcess())

    for split in compare_outcomes(deployed, simulated).values():
        assert split["max_abs_score_diff"] == 0.0 and split["ks_abs_diff"] == 0.0
    assert deployed.extra["psi_bytes"] > 0 and deployed.extra["psi_seconds"] > 0
    kinds = deployed.extra["messages"]["by_kind"]
    assert {node_psi.REQUEST, node_psi.SERVE, node_psi.INTERSECT} <= set(kinds)

    from fedrisk.federation.backends import MESSAGE_LOG_FILE
    from fedrisk.federation.channel import MessageLog

    log = MessageLog.from_jsonl(tmp_path / "dep" / "output" / MESSAGE_LOG_FILE)
    partners = {"tax", "supply_chain"}
    for record in log.records:
        if not record.kind.startswith("query.psi_"):
            continue
        # what partners send or receive in PSI is protocol bytes only: never an id array
        if record.sender in partners or record.receiver in partners:
            assert record.arrays and all(dtype.endswith("u1") for _, _, dtype in record.arrays), record
        # the only ids in PSI messages are the label holder's own, coming back from its own node
        if any(dtype.startswith("<U") for _, _, dtype in record.arrays):
            assert record.sender == "bank" and record.kind == node_psi.INTERSECT, record


def test_intersect_without_a_request_is_a_clear_error() -> None:
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    from fedrisk.core.errors import FedriskError

    msg = Message(RecordDict({"psi": ConfigRecord({"partners": "[]", "shards": "[]"})}), dst_node_id=1,
                  message_type=node_psi.INTERSECT)  # fmt: skip
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(FedriskError, match="no PSI key"):
        node_psi.handle(msg, context)
