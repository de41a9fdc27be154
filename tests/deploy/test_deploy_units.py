"""The deployment glue without a deployment: certificates, the fast-polling grid, app dispatch, run config.

These run in a second; the end-to-end loopback tests (marked slow) live in ``test_loopback.py``.
"""

from __future__ import annotations

import copy
import ipaddress
import stat
from pathlib import Path

import pytest
import tomli
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import ServerApp

import fedrisk  # noqa: F401 - sets Flower's environment before flwr is imported
from fedrisk.config.experiment import validate
from fedrisk.data.setting import build_setting
from fedrisk.deploy.experiment import SMALL_VERTICAL, federated_outcome
from fedrisk.federation.channel import ClientFailure, MessageLog
from fedrisk.federation.deploy import apps
from fedrisk.federation.deploy.certificates import make_node_keys, make_server_certificates
from fedrisk.federation.deploy.loopback import (
    APP_DIR,
    DeploymentError,
    free_port,
    listening_ports,
    run_config_for_app,
)
from fedrisk.federation.deploy.remote import Captured, CaptureEngine
from fedrisk.federation.grids import RecordingGrid
from fedrisk.federation.nodes import PARTY_QUERY

# --- certificates --------------------------------------------------------------------------------------


def test_server_certificate_is_signed_by_the_ca_for_loopback_names(tmp_path: Path) -> None:
    certs = make_server_certificates(tmp_path, hosts=("127.0.0.1", "localhost"))
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the signature or issuer does not match
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert stat.S_IMODE(certs.server_key.stat().st_mode) == 0o600


def test_node_keys_are_openssh_p384_pairs(tmp_path: Path) -> None:
    keys = make_node_keys(tmp_path, "tax")
    private = load_ssh_private_key(keys.private_key.read_bytes(), None)
    public = load_ssh_public_key(keys.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP384R1)
    assert public.public_numbers() == private.public_key().public_numbers()
    assert stat.S_IMODE(keys.private_key.stat().st_mode) == 0o600


# --- the fast-polling grid -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """Flower stamps every new Message with the process's task identity (an engine sets it; we do)."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_run_id", 1), ("_node_id", SUPERLINK_NODE_ID), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)


class _SlowGrid:
    """Replies after ``polls`` pulls; node 3 never answers and the SuperLink reports it unavailable."""

    def __init__(self, polls: int = 3) -> None:
        self.polls = polls
        self.pulls = 0
        self.pushed: list[Message] = []

    def push_messages(self, messages):
        ids = []
        for i, m in enumerate(messages):
            m.metadata.__dict__["_message_id"] = f"m{len(self.pushed) + i}"
            ids.append(m.metadata.message_id)
        self.pushed.extend(messages)
        return ids

    def pull_messages(self, message_ids):
        self.pulls += 1
        if self.pulls < self.polls:
            return []
        out = []
        for m in self.pushed:
            if m.metadata.message_id not in set(message_ids):
                continue
            if m.metadata.dst_node_id == 3:
                reply = Message(Error(ErrorCode.NODE_UNAVAILABLE, "Node Unavailable"), reply_to=m)
                reply.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
                out.append(reply)
            else:
                out.append(Message(RecordDict({"c": ConfigRecord({"ok": 1})}), reply_to=m))
        return out


def _query(node: int) -> Message:
    return Message(RecordDict(), dst_node_id=node, message_type="query.x", group_id="1")


def test_polling_grid_returns_as_soon_as_replies_arrive() -> None:
    inner = _SlowGrid(polls=3)
    replies = list(apps.PollingGrid(inner, min_interval=0.001).send_and_receive([_query(5), _query(6)]))
    assert sorted(r.metadata.src_node_id for r in replies) == [5, 6]
    assert inner.pulls == 3


def test_superlink_unavailable_error_is_blamed_on_the_node_that_was_asked() -> None:
    inner = _SlowGrid(polls=1)
    assert inner.pushed == []
    grid = RecordingGrid(apps.PollingGrid(inner), MessageLog(), {5: "bank", 3: "tax"})
    with pytest.raises(ClientFailure) as info:
        grid.send_and_receive([_query(5), _query(3)])
    assert info.value.party == "tax" and info.value.node_id == 3
    assert "Node Unavailable" in str(info.value)


def test_polling_grid_gives_up_at_the_timeout() -> None:
    inner = _SlowGrid(polls=10**9)
    assert list(apps.PollingGrid(inner, min_interval=0.001).send_and_receive([_query(5)], timeout=0.05)) == []


# --- dispatch and run config ---------------------------------------------------------------------------


def test_topology_needs_exactly_one_app_config() -> None:
    assert apps.topology_of({"vertical-plan": "/p.npz", "fedrisk-horizontal": ""}) == "vertical"
    assert apps.topology_of({"vertical-plan": "", "fedrisk-horizontal": "{}"}) == "horizontal"
    with pytest.raises(Exception, match="neither"):
        apps.topology_of({"vertical-plan": "", "fedrisk-horizontal": ""})


def test_pyproject_components_are_the_deploy_apps() -> None:
    app = tomli.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["components"] == {
        "serverapp": "fedrisk.federation.deploy.apps:server_app",
        "clientapp": "fedrisk.federation.deploy.apps:client_app",
    }
    assert isinstance(apps.server_app, ServerApp)
    assert "federations" not in tomli.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]


def test_client_app_answers_the_party_query_for_either_topology(tmp_path: Path) -> None:
    from fedrisk.config.horizontal import HorizontalConfig, HorizontalJob
    from fedrisk.config.model import TrainConfig

    job = HorizontalJob(horizontal=HorizontalConfig(), train=TrainConfig()).model_dump_json()
    for rc in ({"vertical-plan": "/p.npz"}, {"fedrisk-horizontal": job}):
        query = Message(RecordDict(), dst_node_id=7, message_type=PARTY_QUERY, group_id="discovery")
        query.metadata.__dict__["_message_id"] = "q"
        context = Context(
            run_id=1,
            node_id=7,
            node_config={"party": "tax", "data-path": str(tmp_path / "t.parquet")},
            state=RecordDict(),
            run_config={"vertical-plan": "", "fedrisk-horizontal": "", **rc},
        )
        reply = apps.client_app(query, context)
        assert reply.content.config_records["party"]["party"] == "tax"


def _captured(data: dict, workdir: Path) -> CaptureEngine:
    config = validate(data)
    engine = CaptureEngine()
    with pytest.raises(Captured):
        federated_outcome(config, build_setting(config, 0), 0, workdir, engine)
    return engine


def test_every_key_the_drivers_send_is_declared_for_flwr_run(tmp_path: Path) -> None:
    """``flwr run`` rejects run-config keys missing from [tool.flwr.app.config]; both drivers must fit."""
    vertical = copy.deepcopy(SMALL_VERTICAL) | {"world": {"n_firms": 800}}
    horizontal = {
        "topology": "horizontal",
        "seeds": [0],
        "world": {"n_firms": 3000, "n_banks": 3},
        "federation": {"horizontal": {"rounds": 1}},
    }
    for data in (vertical, horizontal):
        engine = _captured(data, tmp_path / data["topology"])
        config = run_config_for_app(engine.run_config, APP_DIR)
        assert not any(k.startswith("party-") for k in config)
        assert apps.topology_of(config) == data["topology"]
        assert all(path.exists() for path in engine.parties.values())


def test_run_config_rejects_undeclared_keys_and_relative_paths() -> None:
    with pytest.raises(DeploymentError, match="not declared"):
        run_config_for_app({"output-dir": "/o", "learning-rate": 0.1}, APP_DIR)
    with pytest.raises(DeploymentError, match="absolute"):
        run_config_for_app({"output-dir": "relative/out"}, APP_DIR)
    config = run_config_for_app({"output-dir": "/o", "party-0": "bank", "party-0-data-path": "/b"}, APP_DIR)
    assert config == {"output-dir": "/o"}


def test_free_port_is_not_listening() -> None:
    port = free_port()
    assert 1024 <= port < 65536 and port not in listening_ports()
