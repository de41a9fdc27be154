"""``flower-supernode`` with a preflight and short polls: Flower's own SuperNode, started by fedrisk.

Flower 1.41's SuperNode waits fixed times (3 s after an empty pull, 0.5 s steps for replies, 1 s back-off
on object pulls; `fedrisk.federation.deploy.polling` lists them with their source lines). This launcher
runs Flower's own ``flower_supernode()`` entry point after `patch_supernode_polling` shortened them in
this process (``--no-short-polls`` keeps Flower's): the idle wait backs off from ``--idle-min`` to
``--idle-max`` and resets whenever a message arrives; reply waits become ``--reply-interval``.
Everything else (TLS, node authentication, the Runtime API, heartbeats, ``--isolation``) is Flower's code
unchanged.

Before Flower starts, `preflight` checks what Flower itself would only retry on forever or report deep in
its log: the party's table exists at its ``data-path``, the SuperLink answers within ``--connect-timeout``
seconds, and (with TLS) its certificate verifies against ``--root-certificates`` for the address dialled.
A failure ends the process at once with one line naming the node and the fix, exit status 2. Usage::

    python -m fedrisk.federation.deploy.supernode [--idle-min S] [--idle-max S] [--reply-interval S] \\
        [--connect-timeout S] [--no-short-polls] -- <flower-supernode arguments>
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fedrisk.federation.deploy.polling import PollingUnsupported, patch_supernode_polling


class PreflightError(RuntimeError):
    """The node cannot work as configured; the message names the node and the fix."""


@dataclass(frozen=True)
class NodeArgs:
    """What the preflight needs from ``flower-supernode``'s arguments."""

    party: str
    data_path: Path | None
    superlink: str
    root_certificates: Path | None
    insecure: bool
    private_key: Path | None

    @classmethod
    def parse(cls, args: list[str]) -> NodeArgs:
        from flwr.common.config import parse_config_args

        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--superlink", default="127.0.0.1:9092")
        parser.add_argument("--root-certificates", type=Path, default=None)
        parser.add_argument("--insecure", action="store_true")
        parser.add_argument("--node-config", default=None)
        parser.add_argument("--auth-supernode-private-key", type=Path, default=None)
        known, _ = parser.parse_known_args(args)
        config = parse_config_args([known.node_config] if known.node_config else None)
        path = config.get("data-path")
        return cls(
            party=str(config.get("party", "?")),
            data_path=None if path is None else Path(str(path)),
            superlink=known.superlink,
            root_certificates=known.root_certificates,
            insecure=known.insecure,
            private_key=known.auth_supernode_private_key,
        )


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(address)
    return host.strip("[]"), int(port)


def preflight(node: NodeArgs, connect_timeout: float = 10.0) -> None:
    """Check the node's table, the SuperLink's reachability and its certificate; `PreflightError` if not."""
    who = f"supernode {node.party!r}"
    if node.data_path is None or node.party == "?":
        raise PreflightError(
            f"{who}: --node-config has no party and data-path; fix: "
            "--node-config \"party='tax' data-path='/data/tax.parquet'\""
        )
    if not node.data_path.exists():
        raise PreflightError(
            f"{who}: its table is missing: data-path {str(node.data_path)!r} does not exist on this machine; "
            "fix: put the party's own table there (python -m fedrisk.deploy tables) or correct --node-config data-path"
        )
    if node.private_key is not None and not node.private_key.is_file():
        raise PreflightError(
            f"{who}: no private key at {str(node.private_key)!r}; fix: --auth-supernode-private-key "
            "pointing at the key whose public half the SuperLink registered"
        )
    try:
        host, port = _split_address(node.superlink)
    except ValueError:
        raise PreflightError(
            f"{who}: --superlink {node.superlink!r} is not host:port; fix: e.g. link.bank.example:9092"
        ) from None
    deadline = time.monotonic() + connect_timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=max(0.5, min(5.0, connect_timeout)))
            break
        except OSError as error:
            if time.monotonic() >= deadline:
                raise PreflightError(
                    f"{who} cannot reach the SuperLink at {host}:{port} within {connect_timeout:g} s "
                    f"({error.strerror or error}); fix: start the SuperLink first, check --superlink and that "
                    "the port is open between the machines"
                ) from None
            time.sleep(0.2)
    with sock:
        if node.insecure:
            return
        if node.root_certificates is None or not node.root_certificates.is_file():
            raise PreflightError(
                f"{who}: no CA certificate at {str(node.root_certificates)!r}; fix: --root-certificates "
                "with the CA that signed the SuperLink's certificate (or --insecure without TLS)"
            )
        context = ssl.create_default_context(cafile=str(node.root_certificates))
        context.set_alpn_protocols(["h2", "http/1.1"])
        sock.settimeout(max(1.0, connect_timeout))
        try:
            with context.wrap_socket(sock, server_hostname=host):
                pass
        except ssl.SSLCertVerificationError as error:
            raise PreflightError(
                f"{who}: the SuperLink at {host}:{port} presented a certificate that {node.root_certificates} "
                f"does not verify ({error.verify_message}); fix: give --root-certificates the CA that signed "
                f"the SuperLink's certificate, and dial a name or address listed in that certificate"
            ) from None
        except (ssl.SSLError, OSError) as error:
            raise PreflightError(
                f"{who}: TLS with the SuperLink at {host}:{port} failed ({error}); fix: check that the "
                "SuperLink runs with TLS (--ssl-certfile) or start both sides with --insecure"
            ) from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, theirs = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        prog="python -m fedrisk.federation.deploy.supernode", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--idle-min", type=float, default=0.01, help="first wait after an empty pull (s)")
    parser.add_argument("--idle-max", type=float, default=0.5, help="longest wait while idle (s)")
    parser.add_argument("--reply-interval", type=float, default=0.005, help="wait for the ClientApp's reply")
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to reach the SuperLink")
    parser.add_argument("--no-short-polls", action="store_true", help="keep Flower's fixed waits")
    args = parser.parse_args(ours)
    import fedrisk  # noqa: F401 - Flower's environment defaults before flwr is imported

    try:
        preflight(NodeArgs.parse(theirs), args.connect_timeout)
        if not args.no_short_polls:
            patch_supernode_polling(args.idle_min, args.idle_max, args.reply_interval)
    except (PreflightError, PollingUnsupported) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    from flwr.supercore.logger import update_console_handler
    from flwr.supernode.cli.flower_supernode import flower_supernode

    update_console_handler(timestamps=True, colored=False)  # log files: when, not colours
    if os.environ.get("FEDRISK_WARM_PROFILE"):  # every HTTP call to the SuperLink, timestamped
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("httpx").setLevel(logging.INFO)

    sys.argv = ["flower-supernode", *theirs]
    flower_supernode()
    return 0


if __name__ == "__main__":
    sys.exit(main())
