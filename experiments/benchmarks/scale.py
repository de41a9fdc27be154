"""Benchmark: how fedrisk's cost grows with firms (vertical) and banks (horizontal), and the 1M x 1M PSI.

Three kinds of point, each in a fresh Python process so its peak memory is its own (the parent sums
process + children RSS with psutil every 0.1 s, and also records ``ru_maxrss``):

- ``vertical --firms N``: the whole vertical pipeline for an N-firm world (bank + tax + supply chain):
  world generation and splits, PSI alignment (partners in parallel processes), split-learning logistic
  regression in mini-batches on fedrisk's in-process Flower grid, scoring; seconds of each stage, KS.
- ``horizontal --banks B``: a horizontal FedAvg run over B banks holding a fixed total of applicants
  (one synthetic bank's applicants dealt out, as in ``horizontal.py``), sampling ``--fraction`` of the
  banks per round; seconds per round, and memory against the banks' data.
- ``psi --n N``: one PSI of N client ids against N server ids (half shared), every step sharded over
  both cores (`fedrisk.protocol.psi_roles.parallel_intersection`).

The growth exponent of each cost is the slope of a least-squares line through (log size, log cost) over
all points (at least three). Every point records the machine's load average before and after: the
machine is shared, and seconds scale with the load. Run by hand, never in the test suite::

    python experiments/benchmarks/scale.py --out scale.json                 # all defaults (~20 min idle)
    python experiments/benchmarks/scale.py --out s.json --firms 10000 30000 100000 --banks 10 20 40 --psi-n 20000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

GIB = 1024**3
TARGETS = {"psi_1m_seconds": 240.0, "peak_rss_gib": 8.0}


# --- memory ------------------------------------------------------------------------------------------


class PeakRss:
    """Peak of (this process + all its children) resident memory, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # it may have ended between listing and reading
                total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.baseline = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def _ru_maxrss_gib() -> dict:
    return {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
        "largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / GIB,
    }


# --- the points (run in a child process) -------------------------------------------------------------


def point_vertical(firms: int, batch_size: int, epochs: int, seed: int) -> dict:
    from fedrisk.config.experiment import validate
    from fedrisk.core.metrics import credit_metrics
    from fedrisk.data.outcome import ScoreKey
    from fedrisk.data.setting import build_setting, coverage_segments
    from fedrisk.methods.federated import federated_vertical

    config = validate(
        {
            "topology": "vertical",
            "seeds": [seed],
            "world": {"n_firms": firms},
            "model": {"kind": "logistic"},
            "training": {"epochs": epochs, "patience": epochs},
            "federation": {"vertical": {"batch_size": batch_size, "psi_parallel": True}},
            "runner": {"workers": 1},
        }
    )
    out: dict = {"firms": firms, "batch_size": batch_size, "epochs": epochs}
    with PeakRss() as rss, tempfile.TemporaryDirectory(prefix="fedrisk-scale-") as tmp:
        started = time.perf_counter()
        setting = build_setting(config, seed)
        out["world_seconds"] = time.perf_counter() - started
        holder = setting.label_holders[0]
        out["rows"] = {name: int(t.n_rows) for name, t in setting.parties.items()}
        out["data_gib"] = (
            sum(float(t.features.memory_usage(deep=True).sum()) for t in setting.parties.values()) / GIB
        )
        started = time.perf_counter()
        outcome = federated_vertical(config, setting, seed, Path(tmp), coverage_segments(setting))
        out["federated_seconds"] = time.perf_counter() - started
    test = outcome.scores[ScoreKey(holder, "test")]
    out.update(
        psi_seconds=outcome.extra["psi_seconds"],
        psi_bytes=outcome.extra["psi_bytes"],
        train_seconds=outcome.extra["train_seconds"],
        round_trips=outcome.extra["round_trips"],
        bytes_sent=outcome.cost["bytes_sent"],
        ks=float(credit_metrics(test.y, test.p)["ks"]),
        end_to_end_seconds=out["world_seconds"] + out["federated_seconds"],
        peak_rss_gib=rss.peak / GIB,
        baseline_rss_gib=rss.baseline / GIB,
    )
    return out


def point_horizontal(banks: int, rows: int, rounds: int, fraction: float, seed: int) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from horizontal import make_banks  # the existing benchmark's dealing of one bank into many

    from fedrisk.config.horizontal import HorizontalConfig
    from fedrisk.config.model import TrainConfig
    from fedrisk.federation.horizontal import run_horizontal

    out: dict = {"banks": banks, "rows": rows, "rounds": rounds, "fraction_fit": fraction}
    with PeakRss() as rss, tempfile.TemporaryDirectory(prefix="fedrisk-scale-") as tmp:
        tables, splits = make_banks(banks, rows, seed)
        data_bytes = sum(float(t.features.memory_usage(deep=True).sum()) for t in tables.values())
        after_data = rss._sample()
        cfg = TrainConfig(batch_size=1024, lr=0.01, patience=0)  # no federated evaluation to stop on
        hcfg = HorizontalConfig(
            rounds=rounds, local_epochs=1, fraction_fit=fraction, fraction_evaluate=0.0, keep="last"
        )
        started = time.perf_counter()
        outcome = run_horizontal(tables, splits, "logistic", cfg, hcfg, "inprocess", Path(tmp), seed)
        wall = time.perf_counter() - started
    history = outcome.history
    per_round = (history[-1]["seconds"] - history[0]["seconds"]) / max(len(history) - 1, 1)
    out.update(
        seconds_per_round=per_round,
        wall_seconds=wall,
        bytes_sent=outcome.bytes_sent,
        data_gib=data_bytes / GIB,
        peak_rss_gib=rss.peak / GIB,
        baseline_rss_gib=rss.baseline / GIB,
        rss_after_data_gib=after_data / GIB,
        federation_overhead_gib=(rss.peak - after_data) / GIB,
    )
    return out


def point_psi(n: int, workers: int, seed: int) -> dict:
    from fedrisk.protocol.psi_roles import parallel_intersection

    rng = np.random.default_rng(seed)
    universe = rng.permutation(int(1.5 * n))
    client = np.array([f"F{i:09d}" for i in universe[:n]])
    server = np.array([f"F{i:09d}" for i in universe[n // 2 : n // 2 + n]])
    with PeakRss() as rss:
        ids, transcript, times = parallel_intersection("bank", client, "tax", server, workers=workers)
    return {
        "n_client": n,
        "n_server": n,
        "workers": workers,
        "shared": int(len(ids)),
        "seconds": transcript.seconds,
        "step_seconds": times.__dict__,
        "bytes_client_to_server": transcript.bytes_client_to_server,
        "bytes_server_to_client": transcript.bytes_server_to_client,
        "fpr": transcript.fpr,
        "peak_rss_gib": rss.peak / GIB,
    }


# --- the parent: one child per point, slopes, JSON ---------------------------------------------------


def _run_point(args: list[str]) -> dict:
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--point", *args], capture_output=True, text=True, env=os.environ
    )
    if done.returncode != 0:
        return {"error": done.stderr[-3000:], "args": args}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    result["loadavg_before"], result["loadavg_after"] = load_before, os.getloadavg()
    print(json.dumps(result), flush=True)
    return result


def growth_exponent(sizes: list[float], costs: list[float]) -> float | None:
    """Slope of log(cost) on log(size) (least squares); None with fewer than three usable points."""
    pairs = [(s, c) for s, c in zip(sizes, costs, strict=True) if s and c and c > 0]
    if len(pairs) < 3:
        return None
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(x, y, 1)[0])


def _slopes(points: list[dict], size: str, costs: tuple[str, ...]) -> dict:
    ok = [p for p in points if "error" not in p]
    return {c: growth_exponent([p[size] for p in ok], [p.get(c) for p in ok]) for c in costs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument("--firms", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=4096, help="vertical mini-batch (one round trip)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--banks", type=int, nargs="*", default=[10, 25, 50, 100])
    parser.add_argument("--bank-rows", type=int, default=200_000, help="applicants over all banks")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fraction", type=float, default=0.1, help="share of banks sampled per round")
    parser.add_argument("--psi-n", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--psi-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--point", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.point:  # child: one point, JSON on the last line of stdout
        kind, size = args.point[0], int(args.point[1])
        rest = [float(v) for v in args.point[2:]]
        if kind == "vertical":
            result = point_vertical(size, int(rest[0]), int(rest[1]), int(rest[2]))
        elif kind == "horizontal":
            result = point_horizontal(size, int(rest[0]), int(rest[1]), rest[2], int(rest[3]))
        else:
            result = point_psi(size, int(rest[0]), int(rest[1]))
        result["ru_maxrss_gib"] = _ru_maxrss_gib()
        print(json.dumps(result))
        return
    if args.out is None:
        parser.error("--out is required")

    import fedrisk

    result: dict = {
        "benchmark": "scale",
        "fedrisk_version": fedrisk.__version__,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "memory_gib": psutil.virtual_memory().total / GIB,
            "loadavg_before": os.getloadavg(),
        },
        "targets": TARGETS,
    }
    seed = str(args.seed)
    psi = [_run_point(["psi", str(n), str(args.psi_workers), seed]) for n in args.psi_n]
    result["psi"] = {"points": psi}
    vertical = [
        _run_point(["vertical", str(n), str(args.batch_size), str(args.epochs), seed]) for n in args.firms
    ]
    result["vertical"] = {
        "points": vertical,
        "growth_exponent": _slopes(
            vertical,
            "firms",
            ("end_to_end_seconds", "psi_seconds", "train_seconds", "peak_rss_gib", "bytes_sent"),
        ),
    }
    horizontal = [
        _run_point(["horizontal", str(b), str(args.bank_rows), str(args.rounds), str(args.fraction), seed])
        for b in args.banks
    ]
    result["horizontal"] = {
        "points": horizontal,
        "growth_exponent": _slopes(
            horizontal,
            "banks",
            ("seconds_per_round", "peak_rss_gib", "federation_overhead_gib", "wall_seconds"),
        ),
    }
    result["machine"]["loadavg_after"] = os.getloadavg()
    peaks = [p.get("peak_rss_gib", 0.0) for p in psi + vertical + horizontal if "error" not in p]
    largest_psi = max((p for p in psi if "error" not in p), key=lambda p: p["n_client"], default=None)
    result["targets_met"] = {
        "peak_rss_below_8_gib": bool(peaks) and max(peaks) < TARGETS["peak_rss_gib"],
        "psi_1m_within_4_min": None
        if largest_psi is None or largest_psi["n_client"] < 1_000_000
        else largest_psi["seconds"] < TARGETS["psi_1m_seconds"],
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
