"""Benchmark: the KS-versus-leak trade-off of the label protections, measured in the real federated run.

For the split-NN (``model.kind = "mlp"``) and for vertical LR, trains the federated model on Flower
(in-process) under each protection and strength, and records the test KS / AUC and the leak the partners'
own messages allowed (`fedrisk.protocol.leakage.LeakMeter`: Li et al.'s norm and direction attacks, AUC
0.5 = labels hidden), worst partner, mean over seeds. The alignment (PSI) is computed once per seed and
reused, since it does not depend on the protection.

Usage::

    python experiments/benchmarks/protection_tradeoff.py [--firms 10000] [--seeds 0 1] [--out ...json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from sklearn.metrics import roc_auc_score

import fedrisk  # noqa: F401 - sets Flower's environment before flwr is imported
from fedrisk.config.model import TrainConfig
from fedrisk.config.vertical import VerticalConfig
from fedrisk.core.metrics import ks_statistic
from fedrisk.data.splits import split_applicants
from fedrisk.data.synthetic import WorldConfig, generate_world
from fedrisk.federation.vertical import run_vertical
from fedrisk.protocol.psi import align_parties

SETTINGS = [
    ("mlp", "none", {}),
    ("mlp", "noise", {"noise_multiplier": 0.5}),
    ("mlp", "noise", {"noise_multiplier": 1.0}),
    ("mlp", "noise", {"noise_multiplier": 2.0}),
    ("mlp", "noise", {"noise_multiplier": 4.0}),
    ("mlp", "label_dp", {"label_dp_epsilon": 4.0}),
    ("mlp", "label_dp", {"label_dp_epsilon": 2.0}),
    ("mlp", "label_dp", {"label_dp_epsilon": 1.0}),
    ("mlp", "label_dp", {"label_dp_epsilon": 0.5}),
    ("logistic", "none", {}),
    ("logistic", "he", {}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--firms", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "protection_tradeoff.json"
    )
    args = parser.parse_args()
    train_cfg = TrainConfig(epochs=30, batch_size=1024, lr=0.02, patience=4)
    rows: list[dict] = []
    started, load = time.perf_counter(), os.getloadavg()
    for seed in args.seeds:
        world = generate_world(WorldConfig(n_firms=args.firms), seed=seed)
        splits = split_applicants(world.parties["bank"], 0.3, 0.15, seed=seed)
        applicants = np.concatenate(list(splits.values()))
        partners = {n: t.ids for n, t in world.parties.items() if n != "bank"}
        alignment = align_parties("bank", applicants, partners, parallel=False, seed=seed)
        for kind, protection, knobs in SETTINGS:
            vcfg = VerticalConfig(psi_parallel=False, protection=protection, **knobs)
            with TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                out = run_vertical(
                    world.parties,
                    "bank",
                    splits,
                    kind,
                    train_cfg,
                    vcfg,
                    "inprocess",
                    Path(tmp),
                    seed,
                    alignment,
                )
                seconds = time.perf_counter() - t0
            test = out.scores["test"]
            leak = out.protection["leak"]
            rows.append(
                {
                    "seed": seed,
                    "model": kind,
                    "protection": protection,
                    **knobs,
                    "test_ks": ks_statistic(test.y, test.p),
                    "test_auc": float(roc_auc_score(test.y, test.p)),
                    "norm_auc": max(v["norm_auc"] for v in leak.values()),
                    "direction_auc": max(v["direction_auc"] for v in leak.values()),
                    "seconds": seconds,
                    "bytes_sent": out.bytes_sent,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    summary = []
    for kind, protection, knobs in SETTINGS:
        same = [
            r
            for r in rows
            if r["model"] == kind
            and r["protection"] == protection
            and all(r.get(k) == v for k, v in knobs.items())
        ]
        summary.append(
            {
                "model": kind,
                "protection": protection,
                **knobs,
                **{
                    m: float(np.mean([r[m] for r in same]))
                    for m in ("test_ks", "test_auc", "norm_auc", "direction_auc", "seconds")
                },
            }
        )
    result = {
        "benchmark": "protection_tradeoff",
        "firms": args.firms,
        "seeds": args.seeds,
        "training": train_cfg.model_dump(),
        "leak": "worst partner's mean per-batch attack AUC on the messages it received (0.5 = hidden)",
        "summary": summary,
        "runs": rows,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": load,
            "wall_seconds": time.perf_counter() - started,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
