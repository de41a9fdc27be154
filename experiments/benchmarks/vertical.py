"""Benchmark: federated vertical LR (bank + tax + supply chain on Flower) against the same model pooled.

Measures, on one synthetic world:

- ``training``: seconds in the training loop of the federated run (every batch a recorded Flower round trip
  to three holders, in-process) and of the pooled twin (one plain torch loop, same model, same batches,
  same early stopping), and their ``ratio``; both stop at the same epoch because they are the same model.
  Runs alternate (twin, federated) ``--repeats`` times; ``ratio`` is the median of the per-pair ratios, so
  load from other processes on a shared machine hits both sides of a pair alike;
- ``alignment``: PSI seconds and bytes (openmined-psi, one run per partner, in parallel processes);
- ``wire``: bytes per training epoch and in total, round trips.

Usage::

    python experiments/benchmarks/vertical.py --firms 100000 --out vertical.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import fedrisk
from fedrisk.config.model import TrainConfig
from fedrisk.config.vertical import VerticalConfig
from fedrisk.core.metrics import ks_statistic
from fedrisk.data.splits import split_applicants
from fedrisk.data.synthetic import WorldConfig, generate_world
from fedrisk.federation.vertical import run_vertical, train_centralized_twin
from fedrisk.protocol.psi import align_parties

TRAINING_KINDS = ("train.vertical_step:step", "train.vertical_step:step+val", "train.vertical_step:val")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--firms", type=int, default=100_000, help="firms in the synthetic world")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16384, help="applicants per step (one round trip)")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--epochs", type=int, default=100, help="maximum epochs (early stopping decides)")
    parser.add_argument("--backend", choices=("inprocess", "ray"), default="inprocess")
    parser.add_argument("--repeats", type=int, default=3, help="alternating (twin, federated) timing pairs")
    args = parser.parse_args()

    world = generate_world(WorldConfig(n_firms=args.firms), seed=args.seed)
    splits = split_applicants(world.parties["bank"], 0.3, 0.15, seed=args.seed)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    vcfg = VerticalConfig(psi_parallel=True)

    # torch's first backward/optimizer step costs ~1 s once per process: pay it before timing anything
    small = {k: v[:500] for k, v in splits.items()}
    train_centralized_twin(world.parties, "bank", small, "logistic", TrainConfig(epochs=1), vcfg, args.seed)

    applicants = np.concatenate(list(splits.values()))
    partners = {name: t.ids for name, t in world.parties.items() if name != "bank"}
    alignment = align_parties("bank", applicants, partners, parallel=vcfg.psi_parallel, seed=args.seed)

    twins, feds, walls = [], [], []
    for _ in range(args.repeats):
        twins.append(train_centralized_twin(world.parties, "bank", splits, "logistic", cfg, vcfg, args.seed))
        with tempfile.TemporaryDirectory() as workdir:
            started = time.perf_counter()
            feds.append(
                run_vertical(
                    world.parties,
                    "bank",
                    splits,
                    "logistic",
                    cfg,
                    vcfg,
                    args.backend,
                    Path(workdir),
                    args.seed,
                    alignment,
                )
            )
            walls.append(time.perf_counter() - started)
    twin, fed = twins[-1], feds[-1]
    fed_seconds = [f.train_seconds for f in feds]
    twin_seconds = [t.train_seconds for t in twins]
    ratios = [f / t for f, t in zip(fed_seconds, twin_seconds, strict=True)]

    by_kind = fed.messages["by_kind"]
    training_bytes = sum(by_kind.get(k, {}).get("bytes", 0) for k in TRAINING_KINDS)
    epochs = len(fed.history)
    f, t = fed.scores["test"], twin.scores["test"]
    result = {
        "benchmark": "vertical_lr",
        "fedrisk_version": fedrisk.__version__,
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "load_1min": os.getloadavg()[0],
        },
        "world": {"n_firms": args.firms, "parties": {k: v.n_rows for k, v in world.parties.items()}},
        "splits": {k: len(v) for k, v in splits.items()},
        "config": {
            "batch_size": args.batch_size,
            "lr": args.lr,
            "max_epochs": args.epochs,
            "backend": args.backend,
        },
        "training": {
            "federated_seconds": float(np.median(fed_seconds)),
            "centralized_seconds": float(np.median(twin_seconds)),
            "ratio": float(np.median(ratios)),
            "federated_seconds_each": fed_seconds,
            "centralized_seconds_each": twin_seconds,
            "ratio_each": ratios,
            "epochs": epochs,
            "best_epoch": fed.best_epoch,
            "same_epochs_as_centralized": epochs == len(twin.history),
            "max_abs_score_difference": float(np.max(np.abs(f.p - t.p))),
            "ks_federated": ks_statistic(f.y, f.p),
            "ks_centralized": ks_statistic(t.y, t.p),
        },
        "alignment": {
            "psi_seconds": alignment.seconds,
            "psi_bytes": fed.psi_bytes,
            "psi_seconds_each_partner": {t.server: t.seconds for t in alignment.transcripts},
            "parallel": vcfg.psi_parallel,
        },
        "wire": {
            "bytes_per_epoch": training_bytes / max(epochs, 1),
            "training_bytes": training_bytes,
            "total_bytes": fed.bytes_sent,
            "round_trips": fed.round_trips,
            "by_kind": by_kind,
        },
        "federated_wall_seconds_without_psi": float(np.median(walls)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {k: result[k] for k in ("training", "alignment")}
            | {"bytes_per_epoch": result["wire"]["bytes_per_epoch"]},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
