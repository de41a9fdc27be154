"""Flower plumbing: recorded channel, in-process Grid, backends, party tables.

The apps below are deliberately tiny but real Flower apps of both kinds (Message API; legacy
``client_fn`` + NumPyClient with Flower's own workflows and SecAgg+), so the plumbing is tested the way
the vertical and horizontal federations use it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import Grid, ServerApp

import fedrisk  # noqa: F401 - before flwr
from fedrisk.core.errors import FedriskError
from fedrisk.federation.backends import (
    COMPLETION_MARKER,
    MESSAGE_LOG_FILE,
    FederationError,
    read_completion,
    run_federation,
)
from fedrisk.federation.channel import ClientFailure, MessageLog, message_nbytes
from fedrisk.federation.grids import RecordingGrid
from fedrisk.federation.inprocess import InProcessGrid
from fedrisk.federation.nodes import (
    party_nodes,
    read_party_table,
    resolve_party,
    write_party_table,
)

# --- a Message-API app: each node scales a sum over its own table; state counts messages ------------

ledger_client = ClientApp()


@ledger_client.query()
def _ledger_query(msg: Message, context: Context) -> Message:
    party = resolve_party(context)
    table = read_party_table(party.data_path)
    seen = int(context.state.config_records["seen"]["n"]) + 1 if "seen" in context.state else 1
    context.state["seen"] = ConfigRecord({"n": seen})
    value = float(np.nansum(table.features["x1"].to_numpy())) * float(msg.content["cfg"]["w"])
    return Message(
        RecordDict(
            {
                "out": ConfigRecord({"party": party.name, "seen": seen, "value": value}),
                "emb": ArrayRecord({"e": Array(np.full((table.n_rows, 2), value, dtype=np.float32))}),
            }
        ),
        reply_to=msg,
    )


@ledger_client.train()
def _ledger_train(msg: Message, context: Context) -> Message:
    party = resolve_party(context).name
    if party == context.run_config.get("fail-party"):
        raise RuntimeError(f"boom in {party}")
    return Message(RecordDict(), reply_to=msg)


ledger_server = ServerApp()


@ledger_server.main()
def _ledger_main(grid: Grid, context: Context) -> None:
    nodes = party_nodes(grid)
    result: dict[str, list] = {party: [] for party in nodes}
    for rnd in range(1, int(context.run_config["rounds"]) + 1):
        cfg = ConfigRecord({"w": float(rnd), "kind": "weights"})
        msgs = [
            Message(RecordDict({"cfg": cfg}), dst_node_id=nid, message_type="query", group_id=str(rnd))
            for nid in nodes.values()
        ]
        for reply in grid.send_and_receive(msgs):
            out = reply.content["out"]
            result[str(out["party"])].append([int(out["seen"]), float(out["value"])])
    if context.run_config.get("fail-party"):
        grid.send_and_receive(
            [
                Message(RecordDict(), dst_node_id=nid, message_type="train", group_id="99")
                for nid in nodes.values()
            ]
        )
    out_dir = Path(str(context.run_config["output-dir"]))
    (out_dir / "result.json").write_text(json.dumps(result, sort_keys=True))


# --- legacy apps: NumPyClient linear regression, Flower workflows and strategies -----------------------


class LinRegClient(NumPyClient):
    """Least squares by a few gradient steps on the bank's own rows."""

    def __init__(self, party: str, x: np.ndarray, y: np.ndarray, fail: bool) -> None:
        self.party, self.x, self.y, self.fail = party, x, y, fail

    def fit(self, parameters, config):
        if self.fail:
            raise ValueError(f"bank data unreadable in {self.party}")
        w = parameters[0].copy()
        for _ in range(5):
            w -= 0.2 * self.x.T @ (self.x @ w - self.y) / len(self.y)
        return [w], len(self.y), {}

    def evaluate(self, parameters, config):
        mse = float(np.mean((self.x @ parameters[0] - self.y) ** 2))
        return mse, len(self.y), {"mse": mse}


def linreg_client_fn(context: Context):
    party = resolve_party(context)
    table = read_party_table(party.data_path)
    x = table.features[["x1", "x2"]].to_numpy()
    fail = party.name == context.run_config.get("fail-party")
    return LinRegClient(party.name, x, table.features["y"].to_numpy(), fail).to_client()


linreg_client = ClientApp(client_fn=linreg_client_fn)
linreg_secagg_client = ClientApp(client_fn=linreg_client_fn, mods=[secaggplus_mod])


def _save_params(context: Context, ndarrays: list[np.ndarray]) -> None:
    np.save(Path(str(context.run_config["output-dir"])) / "params.npy", ndarrays[0])


def legacy_workflow_server(num_shares: int | None = None) -> ServerApp:
    """``@app.main`` + LegacyContext + DefaultWorkflow, optionally with the SecAgg+ fit workflow."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(initial_parameters=ndarrays_to_parameters([np.zeros(2)]), min_available_clients=2)
        rounds = int(context.run_config.get("rounds", 1))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        fit = (
            None
            if num_shares is None
            else SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=2)
        )
        DefaultWorkflow(fit_workflow=fit)(grid, legacy)
        _save_params(context, legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays())

    return app


def _server_fn(context: Context) -> ServerAppComponents:
    def evaluate_fn(rnd, ndarrays, config):
        _save_params(context, ndarrays)

    strategy = FedAvg(initial_parameters=ndarrays_to_parameters([np.zeros(2)]), evaluate_fn=evaluate_fn)
    return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=2))


legacy_fn_server = ServerApp(server_fn=_server_fn)


def _run(tmp_path, server, client, parties, backend="inprocess", **config):
    out = tmp_path / f"out-{backend}"
    run_federation(server, client, parties, {"output-dir": str(out), **config}, backend)
    return out


# --- tests -------------------------------------------------------------------------------------------


def test_message_api_round_trip_keeps_state_per_node(tmp_path, vertical_parties):
    out = _run(tmp_path, ledger_server, ledger_client, vertical_parties, rounds=3)

    result = json.loads((out / "result.json").read_text())
    assert sorted(result) == ["bank", "supply_chain", "tax"]
    for party, path in vertical_parties.items():
        table_sum = float(np.nansum(read_party_table(path).features["x1"]))
        assert [seen for seen, _ in result[party]] == [1, 2, 3]  # context.state persisted per node
        assert [v for _, v in result[party]] == pytest.approx([table_sum * r for r in (1, 2, 3)])
    log = MessageLog.from_jsonl(out / MESSAGE_LOG_FILE)
    assert len(log) == 3 * 3 * 2
    assert {r.kind for r in log.records} == {"query:weights"}  # replies inherit their request's kind
    assert read_completion(out)["messages"] == 18


def test_legacy_default_workflow_fedavg_trains(tmp_path, bank_parties, w_true):
    out = _run(tmp_path, legacy_workflow_server(), linreg_client, bank_parties(3), rounds=8)

    w = np.load(out / "params.npy")
    assert np.linalg.norm(w - w_true) < 0.05 * np.linalg.norm(w_true)
    kinds = MessageLog.from_jsonl(out / MESSAGE_LOG_FILE).by_kind()
    assert kinds["train"]["messages"] == 8 * 3 * 2 and kinds["evaluate"]["messages"] == 8 * 3 * 2


def test_legacy_server_fn_app_runs_in_process(tmp_path, bank_parties):
    out = _run(tmp_path, legacy_fn_server, linreg_client, bank_parties(3))
    assert np.linalg.norm(np.load(out / "params.npy")) > 0.5  # moved from the zero initialisation


def test_secaggplus_gives_the_fedavg_aggregate(tmp_path, bank_parties):
    parties = bank_parties(4)
    plain = _run(tmp_path / "plain", legacy_workflow_server(), linreg_client, parties)
    secure = _run(tmp_path / "secure", legacy_workflow_server(num_shares=3), linreg_secagg_client, parties)

    w_plain, w_secure = np.load(plain / "params.npy"), np.load(secure / "params.npy")
    assert np.linalg.norm(w_plain) > 0.1
    np.testing.assert_allclose(w_secure, w_plain, atol=1e-4)  # quantisation step: 16 / 2**22
    stages = MessageLog.from_jsonl(secure / MESSAGE_LOG_FILE).by_kind()["train"]["messages"]
    assert stages == 4 * 4 * 2  # setup, share keys, masked vectors, unmask


def _secagg_once(parties: dict[str, Path], num_shares: int, fail_on_error: bool, out: Path):
    grid = InProcessGrid.for_parties(linreg_secagg_client, parties, {"output-dir": str(out)})
    recording = RecordingGrid(grid, MessageLog(), grid.node_names, fail_on_error=fail_on_error)
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={"output-dir": str(out)}
    )
    try:
        legacy_workflow_server(num_shares=num_shares)(recording, context)
    finally:
        grid.close()
    return recording


def test_even_num_shares_fails_the_run_instead_of_an_untrained_model(tmp_path, bank_parties):
    parties = bank_parties(5)
    out = tmp_path / "out"
    out.mkdir()
    # What happens without the check: every client fails, Flower halts SecAgg+ and "succeeds" untrained.
    silent = _secagg_once(parties, num_shares=4, fail_on_error=False, out=out)
    assert len(silent.failures) == 5 and "IndexError" in silent.failures[0].reason
    assert np.all(np.load(out / "params.npy") == 0.0)

    with pytest.raises(ClientFailure, match="IndexError") as info:
        run_federation(
            legacy_workflow_server(num_shares=4),
            linreg_secagg_client,
            parties,
            {"output-dir": str(out)},
            "inprocess",
        )
    assert info.value.party.startswith("bank_")
    assert not (out / COMPLETION_MARKER).exists()


def test_message_api_client_exception_names_the_party(tmp_path, vertical_parties):
    with pytest.raises(ClientFailure, match="boom in tax") as info:
        _run(tmp_path, ledger_server, ledger_client, vertical_parties, rounds=1, **{"fail-party": "tax"})
    assert info.value.party == "tax"
    assert isinstance(info.value.__cause__, RuntimeError)  # in-process: the client's own traceback


@pytest.mark.parametrize(
    "server", [legacy_workflow_server(), legacy_fn_server], ids=["workflow", "server_fn"]
)
def test_legacy_client_exception_names_the_party(tmp_path, bank_parties, server):
    # The server_fn path runs Flower's legacy Server, which catches client errors and aggregates the
    # rest; the failure must still surface.
    with pytest.raises(ClientFailure, match="bank data unreadable in bank_2") as info:
        _run(tmp_path, server, linreg_client, bank_parties(3), **{"fail-party": "bank_2"})
    assert info.value.party == "bank_2"


def test_message_log_counts_every_message_and_its_bytes(vertical_parties, tmp_path):
    grid = InProcessGrid.for_parties(ledger_client, vertical_parties, {})
    log = MessageLog()
    recording = RecordingGrid(grid, log, grid.node_names)
    sent = received = 0
    for rnd in (1, 2):
        msgs = [
            Message(
                RecordDict({"cfg": ConfigRecord({"w": 1.0})}),
                dst_node_id=nid,
                message_type="query",
                group_id=str(rnd),
            )
            for nid in recording.get_node_ids()
        ]
        replies = list(recording.send_and_receive(msgs))
        sent, received = sent + len(msgs), received + len(replies)
    ids = recording.push_messages(
        [
            Message(
                RecordDict({"cfg": ConfigRecord({"w": 2.0})}),
                dst_node_id=1001,
                message_type="query",
                group_id="3",
            )
        ]
    )
    received += len(list(recording.pull_messages(ids)))
    sent += 1

    assert len(log) == sent + received == 14
    assert log.bytes_sent() == grid.bytes_copied > 0  # same protobuf sizes on both sides of the grid
    assert [r.nbytes for r in log.records[6:9]] == [message_nbytes(m) for m in msgs]  # round 2, as sent
    by_link = log.summary()["by_link"]
    assert by_link["bank->server"]["messages"] == 3 and by_link["server->tax"]["messages"] == 2
    tax_reply = next(r for r in log.records if r.sender == "tax")
    n_tax = read_party_table(vertical_parties["tax"]).n_rows
    assert tax_reply.arrays == [("emb/e", (n_tax, 2), "float32")] and tax_reply.round == 1

    log.add_external("bank", "tax", "psi.request", nbytes=500, arrays=[("ids", (10,), "uint8")])
    path = log.to_jsonl(tmp_path / "log.jsonl")
    again = MessageLog.from_jsonl(path)
    assert again.records == log.records and again.summary() == log.summary()
    assert again.by_kind()["psi.request"] == {"messages": 1, "bytes": 500}


def test_party_table_round_trip_keeps_categories_nans_label_and_name(tmp_path, make_table):
    table = make_table("bank", 50, seed=3, label=True)
    path = write_party_table(table, tmp_path / "bank.parquet")
    back = read_party_table(path)

    assert back.name == "bank" and back.meta == {"seed": 3}
    assert list(back.ids) == list(table.ids)
    np.testing.assert_array_equal(back.label, table.label)
    np.testing.assert_array_equal(back.cohort, table.cohort)
    assert back.label.dtype == np.int8 and back.cohort.dtype == np.int8
    pd.testing.assert_frame_equal(back.features, table.features)  # category dtype, NaNs, column order
    assert back.features["revenue"].isna().sum() == table.features["revenue"].isna().sum() > 0
    assert back.categorical_columns() == ["sector"]

    assert read_party_table(path) is back  # cached per process
    unlabelled = make_table("tax", 20, seed=4)
    write_party_table(unlabelled, path)  # a rewrite invalidates the cache
    fresh = read_party_table(path)
    assert fresh.name == "tax" and fresh.label is None and fresh.cohort is None and fresh.n_rows == 20
    with pytest.raises(ValueError):
        fresh.ids[0] = "tampered"  # the cached table is shared: write-protected


def test_party_table_rejects_reserved_columns_and_missing_files(tmp_path, make_table):
    table = make_table("bank", 5, seed=0)
    bad = type(table)(name="bank", ids=table.ids, features=table.features.rename(columns={"x1": "__id__"}))
    with pytest.raises(FedriskError, match="reserved"):
        write_party_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(FedriskError, match="data-path"):
        read_party_table(tmp_path / "nowhere.parquet")


def test_resolve_party_from_node_config_or_partition_id():
    def ctx(node_config, run_config):
        return Context(
            run_id=1, node_id=5, node_config=node_config, state=RecordDict(), run_config=run_config
        )

    deployed = resolve_party(ctx({"party": "tax", "data-path": "/data/tax.parquet"}, {}))
    assert (deployed.name, str(deployed.data_path)) == ("tax", "/data/tax.parquet")
    simulated = resolve_party(
        ctx({"partition-id": 1, "num-partitions": 2}, {"party-1": "bank", "party-1-data-path": "/b.pq"})
    )
    assert (simulated.name, str(simulated.data_path)) == ("bank", "/b.pq")
    with pytest.raises(FedriskError, match="party-1-data-path"):
        resolve_party(ctx({"partition-id": 1}, {"party-1": "bank"}))
    with pytest.raises(FedriskError, match="node-config"):
        resolve_party(ctx({}, {}))


def test_run_that_does_not_finish_raises(tmp_path):
    with pytest.raises(FederationError, match="completion marker"):
        read_completion(tmp_path)
    with pytest.raises(FedriskError, match="output-dir"):
        run_federation(ledger_server, ledger_client, {"bank": tmp_path / "b.pq"}, {}, "inprocess")


@pytest.mark.slow
def test_ray_simulation_matches_in_process(tmp_path, vertical_parties):
    ray = pytest.importorskip("ray")
    local = _run(tmp_path, ledger_server, ledger_client, vertical_parties, rounds=2)
    simulated = _run(tmp_path, ledger_server, ledger_client, vertical_parties, backend="ray", rounds=2)

    assert (simulated / "result.json").read_text() == (local / "result.json").read_text()
    log = MessageLog.from_jsonl(simulated / MESSAGE_LOG_FILE)
    assert log.by_kind()["query:weights"]["messages"] == 2 * 3 * 2
    assert log.by_kind()["query.fedrisk_party"]["messages"] == 3 * 2  # node discovery, also recorded
    assert not ray.is_initialized()


@pytest.mark.slow
def test_ray_client_failure_reaches_the_driver(tmp_path, bank_parties):
    ray = pytest.importorskip("ray")
    with pytest.raises(ClientFailure, match="bank data unreadable in bank_2") as info:
        _run(
            tmp_path,
            legacy_workflow_server(),
            linreg_client,
            bank_parties(2),
            backend="ray",
            **{"fail-party": "bank_2"},
        )
    assert info.value.party == "bank_2"  # named through node discovery, not a random node ID
    assert not (tmp_path / "out-ray" / COMPLETION_MARKER).exists()
    assert not ray.is_initialized()
