"""Benchmark synthetic-world generation: wall and CPU seconds, peak memory, realised default rate.

Peak memory is the process's peak resident set size (``resource.getrusage(...).ru_maxrss``), which includes
the interpreter and imported libraries; it is measured in a fresh process so earlier runs cannot inflate it.
Wall seconds depend on what else runs on the machine (the JSON records the load average); CPU seconds less so.

Usage::

    python experiments/benchmarks/generate.py --firms 1000000 --out generate_1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

try:
    import fedrisk  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedrisk.data.synthetic import WorldConfig, generate_world  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--firms", type=int, default=1_000_000, help="number of firms")
    parser.add_argument("--banks", type=int, default=1, help="number of banks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)

    config = WorldConfig(n_firms=args.firms, n_banks=args.banks)
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    world = generate_world(config, seed=args.seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    result = {
        "benchmark": "generate_world",
        "n_firms": args.firms,
        "n_banks": args.banks,
        "seed": args.seed,
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "peak_rss_gib": round(peak_kib / 2**20, 3),
        "default_rate_target": config.default_rate,
        "default_rate_realised": round(float(world.firms["default_12m"].mean()), 5),
        "rows": {name: table.n_rows for name, table in world.parties.items()},
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
