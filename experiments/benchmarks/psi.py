"""Benchmark PSI entity alignment: serial vs parallel partners, seconds and bytes each way.

The bank holds ``n`` firm ids; the tax authority holds 95% of them plus ``0.2 n`` others; the
supply-chain platform 40% of them plus ``0.1 n`` others. Both modes run on the same ids; the parallel
mode is forced (even below `PARALLEL_MIN_ITEMS`) so small ``n`` shows where process start-up stops
paying off. Wall seconds depend on what else runs on the machine (the JSON records the load average);
the serial mode's CPU seconds do not.

Usage::

    python experiments/benchmarks/psi.py --n 100000 --out psi_100k.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

try:
    import fedrisk  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import private_set_intersection.python as psi  # noqa: E402

import fedrisk.protocol.psi as psi_mod  # noqa: E402


def make_ids(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Random 18-character ids (the length of a Chinese USCC) for the bank and its two partners."""
    rng = np.random.default_rng(seed)
    total = int(n * 1.3) + 10
    alphabet = np.frombuffer(b"0123456789ABCDEFGHJKLMNPQRTUWXY", dtype="S1")
    raw = rng.choice(alphabet, size=(int(total * 1.01) + 10, 18)).view("S18").ravel()
    universe = rng.permutation(np.unique(raw))[:total].astype(str).astype(object)
    bank, others = universe[:n], universe[n:]
    tax = rng.permutation(np.concatenate([rng.choice(bank, int(0.95 * n), replace=False), others[: n // 5]]))
    chain = rng.permutation(
        np.concatenate([rng.choice(bank, int(0.40 * n), replace=False), others[n // 5 : n // 5 + n // 10]])
    )
    return bank, {"tax": tax, "supply_chain": chain}


def run(bank: np.ndarray, partners: dict[str, np.ndarray], parallel: bool) -> tuple[dict, dict]:
    load_before, cpu_before = os.getloadavg()[0], time.process_time()
    alignment = psi_mod.align_parties("bank", bank, partners, parallel=parallel, seed=0)
    cpu = time.process_time() - cpu_before
    summary = {
        "seconds": round(alignment.seconds, 3),
        # Serial: all PSI work is in this process, so this is the load-independent cost. Parallel: the
        # workers are forkserver children, invisible to getrusage; left out rather than misreported.
        "cpu_seconds": None if parallel else round(cpu, 3),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "transcripts": [
            {
                "client": t.client,
                "server": t.server,
                "n_client": t.n_client,
                "n_server": t.n_server,
                "fpr": t.fpr,
                "structure": psi_mod.choose_fpr(t.n_client, t.n_server)[1],
                "seconds": round(t.seconds, 3),
                "bytes_client_to_server": t.bytes_client_to_server,
                "bytes_server_to_client": t.bytes_server_to_client,
            }
            for t in alignment.transcripts
        ],
        "bytes_client_to_server": sum(t.bytes_client_to_server for t in alignment.transcripts),
        "bytes_server_to_client": sum(t.bytes_server_to_client for t in alignment.transcripts),
        "shared": {name: len(ids) for name, ids in alignment.shared_ids.items()},
    }
    return summary, alignment.shared_ids


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="the bank's number of firm ids")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    bank, partners = make_ids(args.n, args.seed)
    serial, serial_ids = run(bank, partners, parallel=False)
    psi_mod.PARALLEL_MIN_ITEMS = 0  # force the process pool, to measure it at every n
    parallel, parallel_ids = run(bank, partners, parallel=True)
    for name in partners:  # the two modes must agree, else the timing means nothing
        assert np.array_equal(serial_ids[name], parallel_ids[name]), name

    result = {
        "benchmark": "psi_alignment",
        "n_bank": args.n,
        "n_partners": {name: len(ids) for name, ids in partners.items()},
        "true_overlap": {name: len(set(bank) & set(ids)) for name, ids in partners.items()},
        "serial": serial,
        "parallel": parallel,
        "speedup": round(serial["seconds"] / parallel["seconds"], 3),
        "machine": {
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "python": platform.python_version(),
            "openmined_psi": psi.__version__,
            "platform": platform.platform(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"n={args.n}: serial {serial['seconds']:.2f} s (cpu {serial['cpu_seconds']:.1f} s), parallel "
        f"{parallel['seconds']:.2f} s (x{result['speedup']}); bank->partners {serial['bytes_client_to_server'] / 1e6:.2f} MB, "
        f"partners->bank {serial['bytes_server_to_client'] / 1e6:.2f} MB -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
