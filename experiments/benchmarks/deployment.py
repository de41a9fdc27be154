"""Benchmark: seconds per round on Flower's deployment engine (loopback) vs the in-process simulation.

Runs the same small vertical job (and, with ``--horizontal``, a small horizontal one) twice: once through
a loopback deployment (SuperLink + one SuperNode per holder on 127.0.0.1, TLS and SuperNode auth, ``flwr
run``; `fedrisk.federation.deploy.loopback`) and once in-process. Reports, per topology:

- ``seconds_per_round``: training seconds per server round (vertical: one round trip to all holders;
  horizontal: one strategy round = fit + evaluate round trips), from the ServerApp's own history;
- ``run_seconds`` (``flwr run`` to the end of the run) and ``startup_seconds`` (SuperLink and nodes up);
- ``clientapp_seconds_per_task``: Flower's own ClientApp compute time divided by the ClientApp tasks
  (every message to a SuperNode is a task and, in Flower 1.41, a fresh ``flwr-clientapp`` process);
- ``ks``: the test KS of both runs (they must agree).

Also measured: ``clientapp_import_seconds``, a cold ``import fedrisk.federation.deploy.apps`` in a new interpreter,
the floor of every task's cost; and the machine's load average, because on a shared machine every number
above moves with it.

Usage::

    python experiments/benchmarks/deployment.py --out deployment.json [--horizontal] [--insecure]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import flwr

import fedrisk
from fedrisk.config.experiment import validate
from fedrisk.data.setting import build_setting
from fedrisk.deploy.experiment import SMALL_VERTICAL, compare_outcomes, federated_outcome, seconds_per_round
from fedrisk.federation.deploy.loopback import LoopbackEngine, LoopbackOptions

#: Fixed waits in Flower 1.41's deployment path that no option changes (file: line in site-packages/flwr).
FLOWER_FIXED_WAITS = {
    "supernode_idle_poll_seconds": 3.0,  # supernode/start_client_internal.py:263, after an empty pull
    "supernode_reply_poll_seconds": 0.5,  # supernode/start_client_internal.py:470, waiting for the ClientApp
    "http_grid_send_and_receive_poll_seconds": 3.0,  # superlink/grid/http_grid.py:412 (bypassed: PollingGrid)
}


def _import_seconds() -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import fedrisk.federation.deploy.apps"], check=True, env=os.environ
    )
    return time.perf_counter() - start


def _measure(data: dict, seed: int, workdir: Path, options: LoopbackOptions) -> dict:
    config = validate(data)
    setting = build_setting(config, seed)
    engine = LoopbackEngine(workdir / "deployment", options)
    deployed = federated_outcome(config, setting, seed, workdir / "deployed", engine)
    start = time.perf_counter()
    simulated = federated_outcome(config, setting, seed, workdir / "simulated", "inprocess")
    sim_seconds = time.perf_counter() - start
    (run,) = engine.runs
    compute = run.info.get("compute-time", {})
    tasks = _clientapp_tasks(workdir / "deployed")
    comparison = compare_outcomes(deployed, simulated)
    return {
        "deployment": {
            "seconds_per_round": seconds_per_round(deployed),
            "run_seconds": run.seconds,
            "startup_seconds": run.startup_seconds,
            "clientapp_tasks": tasks,
            "clientapp_seconds_per_task": (compute.get("clientapp-seconds") or 0.0) / tasks
            if tasks
            else None,
            "serverapp_seconds": compute.get("serverapp-seconds"),
            "bytes_sent": deployed.cost.get("bytes_sent"),
            "tls": run.tls,
            "node_auth": run.node_auth,
        },
        "simulation": {
            "seconds_per_round": seconds_per_round(simulated),
            "wall_seconds": sim_seconds,
            "bytes_sent": simulated.cost.get("bytes_sent"),
        },
        "ks": {
            k: {"deployment": v["ks_deployment"], "simulation": v["ks_simulation"]}
            for k, v in comparison.items()
        },
        "max_abs_score_diff": max(v["max_abs_score_diff"] for v in comparison.values()),
        "round_trips": deployed.extra.get("round_trips"),
    }


def _clientapp_tasks(workdir: Path) -> int:
    """Messages the ServerApp sent to SuperNodes, from the run's message log (one ClientApp task each)."""
    records = [
        json.loads(line) for log in workdir.rglob("messages.jsonl") for line in log.read_text().splitlines()
    ]
    return sum(1 for r in records if r["sender"] == "server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--firms", type=int, default=3000)
    parser.add_argument(
        "--epochs", type=int, default=3, help="vertical: full-batch epochs (one round trip each)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="horizontal: strategy rounds")
    parser.add_argument("--horizontal", action="store_true", help="also measure a 3-bank horizontal job")
    parser.add_argument("--insecure", action="store_true", help="no TLS, no SuperNode authentication")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    options = LoopbackOptions(tls=not args.insecure, node_auth=not args.insecure)
    load_before = os.getloadavg()
    result: dict = {
        "fedrisk_version": fedrisk.__version__,
        "flwr_version": flwr.__version__,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_before": load_before},
        "flower_fixed_waits": FLOWER_FIXED_WAITS,
        "superexec_task_poll_interval": options.task_poll_interval,
        "clientapp_import_seconds": _import_seconds(),
    }
    vertical = copy.deepcopy(SMALL_VERTICAL)
    vertical["world"] = {"n_firms": args.firms}
    vertical["training"]["epochs"] = args.epochs
    jobs = {"vertical": vertical}
    if args.horizontal:
        jobs["horizontal"] = {
            "topology": "horizontal",
            "seeds": [args.seed],
            "world": {"n_firms": 2 * args.firms, "n_banks": 3},
            "training": {"batch_size": 256},
            "federation": {"horizontal": {"rounds": args.rounds, "local_epochs": 1}},
        }
    with tempfile.TemporaryDirectory(prefix="fedrisk-deploy-bench-") as tmp:
        for name, data in jobs.items():
            result[name] = {"config": data, **_measure(data, args.seed, Path(tmp) / name, options)}
            print(name, json.dumps({k: result[name][k] for k in ("deployment", "simulation")}, indent=1))
    result["machine"]["loadavg_after"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
