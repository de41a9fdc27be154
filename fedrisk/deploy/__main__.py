"""``python -m fedrisk.deploy``: loopback demo, per-holder tables, and runs on a real SuperLink.

    python -m fedrisk.deploy loopback OUTDIR [--config C] [--set k=v ...] [--insecure] [--no-node-auth] [--cold]
    python -m fedrisk.deploy tables CONFIG --out DIR [--seed S] [--set k=v ...]
    python -m fedrisk.deploy run CONFIG --connection NAME --out RESULTS [--set k=v ...]

Errors are one line on standard error and exit status 1, like ``fedrisk``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import shutil
import signal
import sys
from pathlib import Path

from fedrisk.config.experiment import ExperimentConfig, load_config, parse_override, set_dotted, validate
from fedrisk.core.errors import FedriskError


def _config(path: Path | None, sets: list[str]) -> tuple[ExperimentConfig, dict]:
    if path is not None:
        return load_config(path, sets)
    from fedrisk.deploy.experiment import SMALL_VERTICAL

    data = copy.deepcopy(SMALL_VERTICAL)
    for text in sets:
        set_dotted(data, *parse_override(text))
    return validate(data, "the built-in loopback config"), data


def _summary(report: dict, root: Path) -> str:
    lines = [f"results: {root}"]
    for item in report["comparison"]:
        for split, c in item["splits"].items():
            lines.append(
                f"  seed {item['seed']} {split}: KS deployment {c['ks_deployment']:.4f} vs simulation "
                f"{c['ks_simulation']:.4f} (|diff| {c['ks_abs_diff']:.2e}, max |score diff| {c['max_abs_score_diff']:.2e})"
            )
        spr = item["seconds_per_round"]
        if spr["deployment"] is not None and spr["simulation"] is not None:
            lines.append(
                f"  seconds per round: deployment {spr['deployment']:.2f}, simulation {spr['simulation']:.3f}"
            )
    for run in report["runs"]:
        security = "" if run.get("tls") is None else f" (TLS {run['tls']}, SuperNode auth {run['node_auth']})"
        lines.append(f"  run {run['run_id']}: {run['status']} in {run['seconds']:.1f} s{security}")
    return "\n".join(lines)


def _loopback(args: argparse.Namespace) -> None:
    from fedrisk.deploy.experiment import run_experiment_on
    from fedrisk.federation.deploy.engines import LoopbackEngine
    from fedrisk.federation.deploy.loopback import LoopbackOptions

    config, raw = _config(args.config, args.set)
    root = args.outdir.resolve()
    options = LoopbackOptions(
        tls=not args.insecure, node_auth=not (args.insecure or args.no_node_auth), warm=not args.cold
    )
    engine = LoopbackEngine(root / "deployment", options)
    report = run_experiment_on(engine, config, raw, root, force=args.force, compare=not args.no_compare)
    print(_summary(report, root))


def _run(args: argparse.Namespace) -> None:
    from fedrisk.deploy.experiment import run_experiment_on
    from fedrisk.federation.deploy.remote import ConnectionEngine

    config, raw = load_config(args.config, args.set)
    root = args.out.resolve()
    engine = ConnectionEngine(args.connection, root / "deployment")
    report = run_experiment_on(engine, config, raw, root, force=args.force, compare=not args.no_compare)
    print(_summary(report, root))


def _tables(args: argparse.Namespace) -> None:
    from fedrisk.data.setting import build_setting
    from fedrisk.deploy.experiment import federated_outcome
    from fedrisk.federation.deploy.remote import Captured, CaptureEngine

    config, _ = load_config(args.config, args.set)
    if config.sweep:
        raise FedriskError(
            "sweep", "tables are written for one experiment point", "remove [sweep] or --set it away"
        )
    seed = config.seeds[0] if args.seed is None else args.seed
    out = args.out.resolve()
    scratch = out / ".driver"
    engine = CaptureEngine()
    with contextlib.suppress(Captured):
        federated_outcome(config, build_setting(config, seed), seed, scratch, engine)
    if not engine.parties:
        raise FedriskError(
            "config", "the federated driver never reached Flower", "check the config's topology"
        )
    nodes = {}
    for party, source in engine.parties.items():
        target = out / source.name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        nodes[party] = {
            "table": str(target),
            "node_config": f"party='{party}' data-path='/path/on/{party}/machine/{target.name}'",
        }
    shutil.rmtree(scratch, ignore_errors=True)
    (out / "nodes.json").write_text(json.dumps({"seed": seed, "parties": nodes}, indent=2))
    print(f"tables for seed {seed} in {out}:")
    for party, node in nodes.items():
        print(f"  {party}: {node['table']}")
    print(
        "give each holder its own table only; its SuperNode points --node-config at it (docs/deployment.md)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedrisk.deploy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    loop = sub.add_parser("loopback", help="SuperLink + one SuperNode per holder on 127.0.0.1, then flwr run")
    loop.add_argument("outdir", type=Path)
    loop.add_argument(
        "--config", type=Path, default=None, help="experiment config (default: a small vertical world)"
    )
    loop.add_argument("--insecure", action="store_true", help="no TLS (and so no SuperNode authentication)")
    loop.add_argument("--no-node-auth", action="store_true", help="TLS, but admit any SuperNode")
    loop.add_argument(
        "--cold", action="store_true", help="Flower's stock SuperNodes: a new ClientApp process per message"
    )

    tables = sub.add_parser("tables", help="each holder's table for one seed, as the driver writes it")
    tables.add_argument("config", type=Path)
    tables.add_argument("--out", type=Path, required=True)
    tables.add_argument("--seed", type=int, default=None)

    run = sub.add_parser("run", help="the experiment, federated method on an existing SuperLink connection")
    run.add_argument("config", type=Path)
    run.add_argument(
        "--connection", required=True, help="SuperLink connection name in $FLWR_HOME/config.toml"
    )
    run.add_argument("--out", type=Path, required=True)

    for p in (loop, tables, run):
        p.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
        )
    for p in (loop, run):
        p.add_argument("--force", action="store_true", help="redo a complete results directory")
        p.add_argument("--no-compare", action="store_true", help="skip the in-process reference run")

    args = parser.parse_args(argv)
    from fedrisk.federation.deploy.loopback import DeploymentError

    # `kill PID` (a CI timeout) must unwind like Ctrl-C, so the federation's processes are stopped too
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))

    try:
        {"loopback": _loopback, "tables": _tables, "run": _run}[args.command](args)
    except (FedriskError, DeploymentError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
