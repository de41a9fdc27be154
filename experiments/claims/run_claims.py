"""Run every claim config and collect the numbers each claim is about into one JSON file.

    python experiments/claims/run_claims.py --out runs/claims [--quick]

`--quick` runs 2 seeds on a 12k-firm world (for CI smoke runs); the README table uses the full configs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLAIMS = {
    "claim1_ks_12pct": ("KS relative uplift", "ks_relative", 0.12),
    "claim2_coverage_25pct": ("approval gain at the bank-alone bad rate", "approval_gain_at_bad_rate", 0.25),
    "claim3_npl_1_8pp": ("NPL cut at the same approval rate (pp)", "npl_points_at_approval", 1.8),
    "claim4_holders_added": ("KS relative uplift per holder set", "ks_relative", None),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    from fedrisk.config.experiment import load_config
    from fedrisk.experiment import run_experiment

    overrides = ["seeds=[0, 1]", "world.n_firms=12000", "evaluation.n_bootstrap=100"] if args.quick else []
    summary = {}
    for name, (what, key, claimed) in CLAIMS.items():
        cfg, raw = load_config(HERE / f"{name}.toml", overrides)
        results = run_experiment(cfg, raw, args.out / name, force=True)
        points = results["sweep"] or [{"point": "base", "assignment": {}, "uplift": results["uplift"]}]
        found = {
            p["point"]: {
                "assignment": p["assignment"],
                "mean": p["uplift"][key]["mean"],
                "ci": p["uplift"][key]["ci"],
            }
            for p in points
        }
        summary[name] = {
            "measure": what,
            "key": key,
            "claimed": claimed,
            "found": found,
            "complete": results["complete"],
        }
        print(f"{name}: {what}: {json.dumps(found)}", flush=True)
    (args.out).mkdir(parents=True, exist_ok=True)
    (args.out / "claims.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
