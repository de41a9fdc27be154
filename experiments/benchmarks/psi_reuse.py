"""Benchmark PSI reuse across seeds: one alignment per run (`cached_alignment`) vs PSI for every seed.

A run on real tables aligns the same tables for every seed; only the applicants (the seed's split) differ.
Each seed here takes a random 90% of the bank's firms as applicants. "per_seed" runs `align_parties` on
them for every seed (what the runner did before); "cached" runs `cached_alignment`, which runs PSI once
over the bank's whole table and derives each seed's alignment from it. Both give the same shared ids (the
script checks). CPU seconds of this process are load-independent (serial PSI); wall seconds are not.

Usage::

    python experiments/benchmarks/psi_reuse.py --n 20000 --seeds 5 --out psi_reuse_20k.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import fedrisk  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from psi import make_ids  # noqa: E402

from fedrisk.protocol.psi import align_parties  # noqa: E402
from fedrisk.protocol.psi_cache import cached_alignment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="bank firms")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    bank, partners = make_ids(args.n, seed=0)
    applicants = {
        s: np.random.default_rng(s).permutation(bank)[: int(0.9 * args.n)].astype(str)
        for s in range(args.seeds)
    }
    timings = {}
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        for mode in ("per_seed", "cached"):
            wall, cpu = time.perf_counter(), time.process_time()
            for seed, ids in applicants.items():
                if mode == "per_seed":
                    alignment = align_parties("bank", ids, partners, parallel=False, seed=seed)
                else:
                    alignment = cached_alignment(
                        Path(cache), "bank", bank, ids, partners, seed=seed, parallel=False
                    )
                results.setdefault(seed, {})[mode] = {p: a.tolist() for p, a in alignment.shared_ids.items()}
            timings[mode] = {
                "wall_seconds": round(time.perf_counter() - wall, 2),
                "cpu_seconds": round(time.process_time() - cpu, 2),
            }
    same = all(r["per_seed"] == r["cached"] for r in results.values())
    report = {
        "benchmark": "psi_reuse",
        "n_bank": args.n,
        "partners": {p: len(ids) for p, ids in partners.items()},
        "seeds": args.seeds,
        "per_seed": timings["per_seed"],
        "cached": timings["cached"],
        "cpu_speedup": round(timings["per_seed"]["cpu_seconds"] / timings["cached"]["cpu_seconds"], 2),
        "same_alignments": same,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if not same:
        sys.exit("cached and per-seed alignments differ")


if __name__ == "__main__":
    main()
