"""The heterogeneous-banks experiment: does personalised federation pay for every bank?

Runs ``experiments/configs/horizontal_heterogeneous.toml`` (or reads a finished results directory with
``--from``) and writes the figures issue 14's "done when" asks for: per bank, KS on its own test applicants
under siloed / federated / personalized / centralized and the gains over siloed with their intervals; the
average gains; and the checks (personalized beats siloed on average with the interval above zero; no bank
with at least 200 test applicants loses more than 0.02 KS; the global model loses at the large banks).

Usage::

    python experiments/benchmarks/heterogeneity.py --out experiments/benchmarks/results/heterogeneity.json
    python experiments/benchmarks/heterogeneity.py --config experiments/configs/horizontal_heterogeneous_gbdt.toml \\
        --out experiments/benchmarks/results/heterogeneity_gbdt.json
    python experiments/benchmarks/heterogeneity.py --from runs/horizontal_heterogeneous-... --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "configs" / "horizontal_heterogeneous.toml"
MIN_TEST = 200
MAX_LOSS = 0.02


def _run(config: Path, out_dir: Path, overrides: list[str]) -> tuple[dict, float]:
    from fedrisk.config.experiment import load_config
    from fedrisk.experiment import run_experiment

    cfg, raw = load_config(config, overrides)
    started = time.perf_counter()
    results = run_experiment(cfg, raw, out_dir, force=True)
    return results, time.perf_counter() - started


def summarise(results: dict) -> dict:
    """Per-bank figures and the checks, from a results.json of the heterogeneous preset."""
    banks = {}
    for bank, block in sorted(results["parties"].items(), key=lambda kv: -kv[1]["n_test"]):
        banks[bank] = {
            "n_test": block["n_test"],
            "ks": {m: round(v["ks"]["mean"], 4) for m, v in block["methods"].items()},
            "federated_minus_siloed": block["uplift"]["ks_points"],
            "personalized_minus_siloed": block["uplift_personalized"]["ks_points"],
        }
    large = [b for b in banks if banks[b]["n_test"] >= MIN_TEST]
    worst = min(banks[b]["personalized_minus_siloed"]["mean"] for b in large)
    biggest = list(banks)[:3]
    checks = {
        "personalized_beats_siloed_interval_above_zero": results["uplift_personalized"]["ks_points"]["ci"][0]
        > 0,
        f"no_bank_with_{MIN_TEST}_test_applicants_loses_more_than_{MAX_LOSS}": worst >= -MAX_LOSS,
        "worst_personalized_minus_siloed_among_those_banks": round(worst, 4),
        "global_model_loses_at_the_three_largest_banks": all(
            banks[b]["federated_minus_siloed"]["mean"] < 0 for b in biggest
        ),
    }
    return {
        "methods_ks": {m: v["ks"] for m, v in results["methods"].items()},
        "uplift_federated_ks_points": results["uplift"]["ks_points"],
        "uplift_personalized_ks_points": results["uplift_personalized"]["ks_points"],
        "out_of_time_ks": {
            m: v["ks"] for m, v in (results.get("out_of_time") or {}).get("methods", {}).items()
        },
        "smallest_banks": (results.get("banks") or {}).get("smallest"),
        "personalization_kept": (results.get("personalization") or {}).get("kept"),
        "banks": banks,
        "checks": checks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, help="a finished results directory to read")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=CONFIG, help="the preset (default: the logistic one)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    args = parser.parse_args()
    seconds = None
    if args.source:
        results = json.loads((args.source / "results.json").read_text())
    else:
        results, seconds = _run(
            args.config, Path(tempfile.mkdtemp(prefix="heterogeneity-")) / "run", args.overrides
        )
    report = {
        "config": str(args.config.resolve().relative_to(ROOT)) if not args.source else str(args.source),
        "seeds": results["seeds"],
        "n_bootstrap": results["config"]["evaluation"]["n_bootstrap"],
        "wall_seconds": seconds if seconds is not None else results["cost"].get("session_wall_seconds"),
        "compute_seconds": results["cost"].get("wall_seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_1min": os.getloadavg()[0],
            "python": platform.python_version(),
        },
        **summarise(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["checks"], indent=2))


if __name__ == "__main__":
    main()
