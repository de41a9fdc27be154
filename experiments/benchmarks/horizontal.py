"""Benchmark: horizontal federation on Flower against the same local training in a plain loop.

For ``--banks`` banks holding ``--rows`` applicants in total, both runs do, per round, ``local_epochs``
of the shared training routine at every bank from the current global model and a row-weighted average:

- ``federated``: `run_horizontal` (ServerApp + ClientApps, recorded grid, protobuf copies, Flower's
  FedAvg and DefaultWorkflow), per backend (in-process, Ray);
- ``plain``: the same client code paths (encoder, model, Adam, batches) in a Python loop, averaging
  with numpy.

Reported per backend: seconds per round (rounds 2..R, so one-off start-up is excluded and reported
separately), ``ratio`` = federated / plain seconds per round, total wall seconds, bytes, peak RSS.
Banks are a quantity-skewed (Dirichlet) split of one synthetic bank's applicants, so any ``--banks``
works (the world generator caps ``n_banks`` at 50).

Usage::

    python experiments/benchmarks/horizontal.py --banks 10 --rows 100000 --rounds 20 --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

import fedrisk
from fedrisk.config.horizontal import HorizontalConfig
from fedrisk.data.splits import split_applicants
from fedrisk.data.synthetic import WorldConfig, generate_world
from fedrisk.federation.horizontal import run_horizontal, shared_preprocessor
from fedrisk.federation.horizontal_client import get_weights, set_weights
from fedrisk.models import TrainConfig, make_model
from fedrisk.models.training import make_optimizer, run_epochs


def make_banks(n_banks: int, rows: int, seed: int) -> tuple[dict, dict]:
    """One synthetic bank's applicants dealt into ``n_banks`` banks of Dirichlet(10) sizes."""
    bank = generate_world(WorldConfig(n_firms=int(rows / 0.7) + 1, n_banks=1), seed=seed).parties["bank"]
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.full(n_banks, 10.0))
    owner = rng.choice(n_banks, size=bank.n_rows, p=shares)
    banks = {f"bank_{i + 1}": bank.take(np.flatnonzero(owner == i)) for i in range(n_banks)}
    splits = {name: split_applicants(t, 0.3, 0.15, seed, out_of_time=False) for name, t in banks.items()}
    return banks, splits


def plain_loop(banks, splits, cfg: TrainConfig, hcfg: HorizontalConfig, seed: int) -> list[float]:
    """The same local training and averaging without Flower; seconds of each round."""
    import pandas as pd
    import torch

    torch.set_num_threads(cfg.num_threads)
    prep = shared_preprocessor(banks, splits)
    data = []
    for name, bank in banks.items():
        pos = pd.Index(bank.ids).get_indexer(splits[name]["train"])
        data.append((prep.transform(bank.features.iloc[pos]), bank.label[pos].astype(np.float32)))
    torch.manual_seed(seed)
    global_w = get_weights(make_model("logistic", prep.n_features_out_))
    seconds = []
    for rnd in range(1, hcfg.rounds + 1):
        start = time.perf_counter()
        updates, weights = [], []
        for i, (X, y) in enumerate(data):
            model = make_model("logistic", prep.n_features_out_)
            set_weights(model, global_w)
            rng = np.random.default_rng([seed, rnd, i])
            run_epochs(model, X, y, hcfg.local_epochs, cfg.batch_size, make_optimizer(model, cfg), rng)
            updates.append(get_weights(model))
            weights.append(len(y))
        total = float(sum(weights))
        global_w = [
            sum(w * u[k] for w, u in zip(weights, updates, strict=True)) / total for k in range(len(global_w))
        ]
        seconds.append(time.perf_counter() - start)
    return seconds


def peak_rss_mb() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self_mb": round(own, 1), "largest_child_mb": round(children, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, default=10)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--backends", default="inprocess,ray")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    banks, splits = make_banks(args.banks, args.rows, args.seed)
    # every round runs (no early stopping), within the epochs the rounds need
    cfg = TrainConfig(batch_size=args.batch_size, lr=0.01, epochs=args.rounds * args.local_epochs, patience=0)
    # no federated evaluation: the plain loop has none either; keep the last round's model
    hcfg = HorizontalConfig(
        rounds=args.rounds, local_epochs=args.local_epochs, fraction_evaluate=0.0, keep="last"
    )
    result: dict = {
        "fedrisk_version": fedrisk.__version__,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "setup": {
            "banks": args.banks,
            "rows": int(sum(b.n_rows for b in banks.values())),
            "train_rows": int(sum(len(s["train"]) for s in splits.values())),
            "rounds": args.rounds,
            "local_epochs": args.local_epochs,
            "batch_size": args.batch_size,
            "model": "logistic",
        },
    }
    plain = plain_loop(banks, splits, cfg, hcfg, args.seed)
    plain_per_round = float(np.mean(plain[1:]))
    result["plain"] = {"seconds_per_round": plain_per_round, "total_seconds": float(sum(plain))}
    for backend in [b for b in args.backends.split(",") if b]:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            outcome = run_horizontal(banks, splits, "logistic", cfg, hcfg, backend, Path(tmp), args.seed)
            wall = time.perf_counter() - start
        rounds = outcome.history
        per_round = (rounds[-1]["seconds"] - rounds[0]["seconds"]) / max(len(rounds) - 1, 1)
        result[backend] = {
            "seconds_per_round": per_round,
            "ratio_to_plain": per_round / plain_per_round,
            "wall_seconds": wall,
            "startup_and_stats_seconds": rounds[0]["seconds"],
            "bytes_sent": outcome.bytes_sent,
            "bytes_per_round": (rounds[-1]["bytes_cumulative"] - rounds[0]["bytes_cumulative"])
            / max(len(rounds) - 1, 1),
            "peak_rss": peak_rss_mb(),
        }
        print(backend, json.dumps(result[backend]), flush=True)
    result["peak_rss"] = peak_rss_mb()
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
