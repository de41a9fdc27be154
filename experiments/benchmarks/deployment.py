"""Benchmark: seconds per round on Flower's deployment engine (loopback, TLS + SuperNode auth) vs in-process.

For each topology (a small vertical job: bank + tax + supply chain; and a 3-bank horizontal job) it starts
ONE loopback federation (SuperLink, one SuperNode per holder in its own directory), runs the federated
method on it (`FederationEngine`: the federation stays up, as it would across machines), and runs the same
job in-process on the same setting. Reported under ``<topology>.deployment``:

- ``seconds_per_round``: training seconds per server round from the ServerApp's own history (vertical: one
  round trip to all holders; horizontal: one strategy round = fit + evaluate round trips);
- ``run_seconds`` (``flwr run`` to the run's end, alignment and scoring included), ``startup_seconds``;
- ``federation_cpu_seconds_per_round``: CPU seconds of all the federation's processes (SuperLink,
  ServerApp, SuperNodes, ClientApps) during the run, per server round (start-up of the ServerApp, PSI and
  scoring included); ``marginal_round`` (warm only): the same job again with 3x the rounds on the same
  federation: its seconds per round, and the CPU seconds each extra round cost (fixed costs cancel, and
  CPU seconds, unlike wall seconds, are not inflated by other jobs on a shared machine);
- ``clientapp_tasks`` and, for warm nodes, the median seconds of a task's three parts as the long-lived
  executor logs them (pull the message from the SuperNode / run the ClientApp / push the reply);
- ``ks``: both runs' test KS (they must agree), ``max_abs_score_diff``.

Modes: ``--mode warm`` (default; `fedrisk.federation.deploy.warm` + `fedrisk.federation.deploy.supernode`)
or ``--mode cold`` (Flower's stock SuperNode: a fresh ``flwr-clientapp`` per message), or ``both``.
The machine's load average is recorded before and after: on a shared machine every figure moves with it.

Usage::

    python experiments/benchmarks/deployment.py --out deployment.json [--mode both] [--no-horizontal]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import flwr
import psutil

import fedrisk
from fedrisk.config.experiment import validate
from fedrisk.data.setting import build_setting
from fedrisk.deploy.experiment import SMALL_VERTICAL, compare_outcomes, federated_outcome, seconds_per_round
from fedrisk.federation.deploy.engines import FederationEngine
from fedrisk.federation.deploy.loopback import (
    LoopbackFederation,
    LoopbackOptions,
    tagged_pids,
)
from fedrisk.federation.deploy.polling import FLOWER_FIXED_WAITS
from fedrisk.federation.deploy.remote import Captured, CaptureEngine

TARGETS = {"vertical_seconds_per_round": 2.0, "horizontal_seconds_per_round": 3.0}
_TASK = re.compile(r"task \d+ (\S+): completed in ([\d.]+) s \(([\d.]+) / ([\d.]+) / ([\d.]+)\)")


def _import_seconds() -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import fedrisk.federation.deploy.apps"], check=True, env=os.environ
    )
    return time.perf_counter() - start


def _task_parts(federation: LoopbackFederation) -> dict | None:
    """Median seconds of the warm executors' task parts, over every task of every node."""
    parts: list[tuple[float, ...]] = []
    for name, process in federation.processes.items():
        if name.startswith("clientapp-"):
            parts += [tuple(map(float, m.groups()[1:])) for m in _TASK.finditer(process.log.read_text())]
    if not parts:
        return None
    keys = ("task", "pull_message", "clientapp", "push_reply")
    return {"tasks": len(parts), **{k: statistics.median(p[i] for p in parts) for i, k in enumerate(keys)}}


class CpuMeter:
    """CPU seconds used by every process of a federation (found by its tag) while a run goes on.

    Wall seconds on a shared machine scale with its load; CPU seconds per round do not, and on an idle
    machine with enough cores they bound the wall time from below."""

    def __init__(self, tag: str, interval: float = 0.25) -> None:
        self.tag, self.interval = tag, interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for pid in tagged_pids(self.tag):
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                used = t.user + t.system
                self.first.setdefault(pid, used)
                self.last[pid] = used

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> CpuMeter:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


def _measure(data: dict, seed: int, workdir: Path, options: LoopbackOptions) -> dict:
    config = validate(data)
    setting = build_setting(config, seed)
    capture = CaptureEngine()
    with contextlib.suppress(Captured):
        federated_outcome(config, setting, seed, workdir / "capture", capture)
    with LoopbackFederation(workdir / "federation", capture.parties, options) as federation:
        engine = FederationEngine(federation)
        with CpuMeter(federation.tag) as cpu:
            deployed = federated_outcome(config, setting, seed, workdir / "deployed", engine)
        parts = _task_parts(federation)
        marginal = None
        if options.warm:  # the same job with 3x the rounds: what one more round costs, fixed costs cancel
            longer = validate(_longer(data))
            with CpuMeter(federation.tag) as cpu_long:
                long_run = federated_outcome(longer, setting, seed, workdir / "deployed-long", engine)
            extra_rounds = _rounds(long_run) - _rounds(deployed)
            if extra_rounds > 0:
                marginal = {
                    "extra_rounds": extra_rounds,
                    "seconds_per_round_of_the_longer_run": seconds_per_round(long_run),
                    "federation_cpu_seconds_per_round": (cpu_long.seconds - cpu.seconds) / extra_rounds,
                }
    start = time.perf_counter()
    simulated = federated_outcome(config, setting, seed, workdir / "simulated", "inprocess")
    sim_seconds = time.perf_counter() - start
    run = engine.runs[0]
    comparison = compare_outcomes(deployed, simulated)
    messages = deployed.extra.get("messages", {})
    return {
        "deployment": {
            "seconds_per_round": seconds_per_round(deployed),
            "run_seconds": run.seconds,
            "federation_cpu_seconds": cpu.seconds,
            "federation_cpu_seconds_per_round": cpu.seconds / max(1, _rounds(deployed)),
            "marginal_round": marginal,
            "startup_seconds": run.startup_seconds,
            "clientapp_tasks": messages.get("by_sender", {}).get("server", {}).get("messages"),
            "warm_task_parts_median_seconds": parts,
            "psi_seconds": deployed.extra.get("psi_seconds"),
            "bytes_sent": deployed.cost.get("bytes_sent"),
            "tls": run.tls,
            "node_auth": run.node_auth,
            "warm": options.warm,
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


def _rounds(outcome) -> int:
    """Server rounds of a run, alignment and scoring included (vertical: round trips; horizontal: rounds)."""
    if outcome.extra.get("round_trips"):
        return int(outcome.extra["round_trips"])
    return sum(1 for row in outcome.history if "round" in row)


def _longer(data: dict) -> dict:
    longer = copy.deepcopy(data)
    if longer.get("topology") == "horizontal":
        longer["federation"]["horizontal"]["rounds"] *= 3
    else:
        longer["training"]["epochs"] *= 3
        longer["training"]["patience"] = longer["training"]["epochs"]  # no early stop: every round runs
    return longer


def jobs(firms: int, epochs: int, rounds: int, seed: int, horizontal: bool) -> dict[str, dict]:
    vertical = copy.deepcopy(SMALL_VERTICAL)
    vertical["world"] = {"n_firms": firms}
    vertical["training"]["epochs"] = epochs
    out = {"vertical": vertical}
    if horizontal:
        out["horizontal"] = {
            "topology": "horizontal",
            "seeds": [seed],
            "world": {"n_firms": 2 * firms, "n_banks": 3},
            "training": {"batch_size": 256},
            "federation": {"horizontal": {"rounds": rounds, "local_epochs": 1}},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--firms", type=int, default=3000)
    parser.add_argument(
        "--epochs", type=int, default=5, help="vertical: full-batch epochs (one round trip each)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="horizontal: strategy rounds")
    parser.add_argument("--no-horizontal", action="store_true", help="vertical only")
    parser.add_argument("--mode", choices=("warm", "cold", "both"), default="warm")
    parser.add_argument("--insecure", action="store_true", help="no TLS, no SuperNode authentication")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    modes = ("warm", "cold") if args.mode == "both" else (args.mode,)
    result: dict = {
        "benchmark": "deployment_rounds",
        "fedrisk_version": fedrisk.__version__,
        "flwr_version": flwr.__version__,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_before": os.getloadavg(),
        },
        "targets": TARGETS,
        "flower_fixed_waits": FLOWER_FIXED_WAITS,
        "clientapp_import_seconds": _import_seconds(),
    }
    with tempfile.TemporaryDirectory(prefix="fedrisk-deploy-bench-") as tmp:
        for name, data in jobs(
            args.firms, args.epochs, args.rounds, args.seed, not args.no_horizontal
        ).items():
            result[name] = {"config": data}
            for mode in modes:
                options = LoopbackOptions(
                    tls=not args.insecure, node_auth=not args.insecure, warm=mode == "warm"
                )
                measured = _measure(data, args.seed, Path(tmp) / name / mode, options)
                key = "deployment" if mode == modes[0] else f"deployment_{mode}"
                result[name][key] = measured.pop("deployment")
                result[name].update({k: v for k, v in measured.items() if k not in result[name]})
                print(name, mode, json.dumps(result[name][key], indent=1), flush=True)
    result["machine"]["loadavg_after"] = os.getloadavg()
    met = {}
    for name in ("vertical", "horizontal"):
        spr = result.get(name, {}).get("deployment", {}).get("seconds_per_round")
        if spr is not None:
            met[f"{name}_seconds_per_round"] = spr < TARGETS[f"{name}_seconds_per_round"]
    result["targets_met"] = met
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
