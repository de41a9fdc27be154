"""Benchmark what an unreachable torch index costs scripts/install.sh before it falls back to the plain pin.

Asks pip (``pip index versions torch``: one index request, no download) with the script's settings
(``--timeout 10 --retries 0``) and with pip's defaults (5 retries with back-off, the configured timeout),
ignoring the machine's pip configuration so only the given index is asked. Where the index is reachable
both finish quickly and the JSON says so. Wall seconds depend on the network; the JSON records the load.

Usage::

    python experiments/benchmarks/install_fallback.py --out install_fallback.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SCRIPT_FLAGS = ["--timeout", "10", "--retries", "0"]


def ask(index: str, flags: list[str]) -> dict:
    """One ``pip index versions torch`` against ``index`` alone; seconds and whether it answered."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "index",
        "versions",
        "torch",
        "--isolated",
        "--index-url",
        index,
        *flags,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "reachable": proc.returncode == 0,
        "flags": flags,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default=CPU_INDEX, help="index to ask (default: PyTorch's CPU index)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = {
        "index": args.index,
        "install_sh": ask(args.index, SCRIPT_FLAGS),
        "pip_defaults": ask(args.index, []),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
