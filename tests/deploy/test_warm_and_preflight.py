"""Warm-round glue and the SuperNode preflight, without a deployment (each test well under a second or two).

- the shortened waits do what `fedrisk.federation.deploy.polling` says, and refuse a Flower they do not fit;
- the launcher's preflight names the node and the fix for a missing table, an unreachable SuperLink and a
  certificate from another CA (against a real TLS listener), and exits 2 with one line, starting nothing.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from fedrisk.federation.deploy import polling
from fedrisk.federation.deploy.certificates import make_server_certificates
from fedrisk.federation.deploy.runs import free_port, install_table, reported_error
from fedrisk.federation.deploy.supernode import NodeArgs, PreflightError, preflight

# --- shortened waits ----------------------------------------------------------------------------------


def test_idle_wait_backs_off_and_resets_when_a_message_arrives(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(polling.time, "sleep", slept.append)
    shim = polling._ShortWaits(idle_min=0.01, idle_max=0.05, reply_interval=0.002)
    for _ in range(4):
        shim.sleep(polling.IDLE_WAIT)
    shim.sleep(polling.REPLY_WAIT)
    shim.sleep(1.25)  # any other wait is Flower's own
    shim.got_message()
    shim.sleep(polling.IDLE_WAIT)
    assert slept == [0.01, 0.02, 0.04, 0.05, 0.002, 1.25, 0.01]
    assert shim.monotonic is time.monotonic  # everything else is the time module


def test_backoff_stays_short_while_a_run_is_going_on(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr(polling.time, "monotonic", lambda: now[0])
    backoff = polling.Backoff(low=0.01, high=0.5, hot_max=0.04, hot_window=10.0)
    assert [backoff.next() for _ in range(8)][-1] == 0.5  # never active: idle polls grow to `high`
    backoff.reset()
    assert [backoff.next() for _ in range(5)] == [0.01, 0.02, 0.04, 0.04, 0.04]
    now[0] += 11.0  # the run is over
    assert [backoff.next() for _ in range(5)][-1] == 0.5


def test_the_installed_flower_has_the_waits_we_shorten() -> None:
    import flwr.supernode.start_client_internal as loop

    polling._check(loop)  # raises PollingUnsupported if Flower moved them


def test_a_flower_without_those_waits_is_refused() -> None:
    fake = types.ModuleType("fake_loop")
    fake.time = time
    with pytest.raises(polling.PollingUnsupported, match="flower-supernode"):
        polling._check(fake)


def test_object_pulls_get_short_backoff_through_flowers_own_parameters() -> None:
    calls = []

    def pull(ids, *, initial_backoff=1.0, backoff_cap=10.0):
        calls.append((ids, initial_backoff, backoff_cap))

    module = types.ModuleType("fake_pull")
    module.pull_objects = pull
    polling.shorten_object_pulls(module, "pull_objects", backoff=(0.005, 0.1))
    polling.shorten_object_pulls(module, "pull_objects", backoff=(0.005, 0.1))  # twice: still one partial
    module.pull_objects(["a"])
    assert calls == [(["a"], 0.005, 0.1)]
    module.other = lambda ids: ids
    with pytest.raises(polling.PollingUnsupported, match="initial_backoff"):
        polling.shorten_object_pulls(module, "other")


def test_flowers_pullers_take_the_backoff_parameters() -> None:
    import flwr.superlink.grid.http_grid as grid
    import flwr.supernode.runtime.run_clientapp as clientapp

    for module, name in ((grid, "pull_objects"), (clientapp, "pull_and_inflate_object_from_tree")):
        original = getattr(module, name)
        try:
            polling.shorten_object_pulls(module, name)
        finally:
            setattr(module, name, original)


# --- preflight -----------------------------------------------------------------------------------------


def _node(tmp_path: Path, port: int, *, table: bool = True, ca: Path | None = None, insecure: bool = False):
    path = tmp_path / "tax.parquet"
    if table:
        path.write_bytes(b"table")
    args = ["--superlink", f"127.0.0.1:{port}", "--node-config", f"party='tax' data-path='{path}'"]
    args += ["--insecure"] if insecure else ["--root-certificates", str(ca or tmp_path / "ca.crt")]
    return NodeArgs.parse(args)


def test_a_missing_table_names_the_node_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(PreflightError) as info:
        preflight(_node(tmp_path, free_port(), table=False, insecure=True), connect_timeout=0.1)
    message = str(info.value)
    assert message.startswith("supernode 'tax': its table is missing")
    assert str(tmp_path / "tax.parquet") in message and "fix:" in message


def test_an_unreachable_superlink_fails_within_the_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(
        PreflightError, match=r"supernode 'tax' cannot reach the SuperLink at 127\.0\.0\.1:\d+"
    ):
        preflight(_node(tmp_path, free_port(), insecure=True), connect_timeout=0.6)
    assert time.monotonic() - started < 5


class _TlsListener:
    """A TLS server on a free port (certificate signed by its own CA) that completes handshakes."""

    def __init__(self, directory: Path) -> None:
        certs = make_server_certificates(directory, hosts=("127.0.0.1", "localhost"))
        self.ca = certs.ca_cert
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certs.server_cert, certs.server_key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    def close(self) -> None:
        self.sock.close()


def test_a_certificate_from_another_ca_is_refused_by_name(tmp_path: Path) -> None:
    listener = _TlsListener(tmp_path / "link")
    try:
        other = make_server_certificates(tmp_path / "other", hosts=("127.0.0.1",)).ca_cert
        preflight(_node(tmp_path, listener.port, ca=listener.ca), connect_timeout=2)  # the right CA passes
        with pytest.raises(PreflightError) as info:
            preflight(_node(tmp_path, listener.port, ca=other), connect_timeout=2)
    finally:
        listener.close()
    message = str(info.value)
    assert "supernode 'tax'" in message and "does not verify" in message
    assert "fix: give --root-certificates the CA that signed the SuperLink's certificate" in message


def test_the_launcher_exits_2_with_one_line_and_starts_nothing(tmp_path: Path) -> None:
    node = [sys.executable, "-m", "fedrisk.federation.deploy.supernode", "--connect-timeout", "0.2", "--"]
    node += ["--insecure", "--superlink", f"127.0.0.1:{free_port()}"]
    node += ["--node-config", f"party='tax' data-path='{tmp_path / 'missing.parquet'}'"]
    done = subprocess.run(node, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: supernode 'tax': its table is missing")
    log = tmp_path / "node.log"
    log.write_text(done.stdout + done.stderr)
    assert reported_error(log) == lines[0][len("error: ") :]


def test_install_table_replaces_files_and_directories_with_fresh_mtimes(tmp_path: Path) -> None:
    src = tmp_path / "src.parquet"
    src.write_bytes(b"one")
    target = tmp_path / "node" / "data" / "bank.parquet"
    install_table(src, target)
    first = target.stat().st_mtime_ns
    src.write_bytes(b"two")
    time.sleep(0.01)
    install_table(src, target)
    assert target.read_bytes() == b"two" and target.stat().st_mtime_ns > first
    bank = tmp_path / "bank_1"
    bank.mkdir()
    (bank / "train.parquet").write_bytes(b"rows")
    target_dir = tmp_path / "node" / "data" / "bank_1"
    install_table(bank, target_dir)
    (bank / "train.parquet").write_bytes(b"new rows")
    install_table(bank, target_dir)
    assert (target_dir / "train.parquet").read_bytes() == b"new rows"
    assert sorted(p.name for p in target_dir.parent.iterdir()) == ["bank.parquet", "bank_1"]
