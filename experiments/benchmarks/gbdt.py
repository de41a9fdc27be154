"""Benchmark: federated gradient-boosted trees (SecureBoost vertical, histogram-summing horizontal) against
the same trees trained pooled with xgboost.

On a synthetic table of ``--rows`` training applicants with ``--label-features`` columns at the label holder
and ``--partner-features`` at one partner (numeric, 5% missing, signal in both), measures in one run:

- ``pooled``: xgboost-cpu `hist` seconds per tree (the centralized baseline, ``--threads`` threads) and our
  numpy core's seconds per tree on the same bins;
- ``vertical``: seconds per tree, bytes per tree, and the split of time (label holder encryption and
  decryption, partner histogram sums) for protection "none" and Paillier-1024 / 2048, each also as a ratio to
  pooled xgboost. Encrypted runs grow ``--encrypted-trees`` trees (the cost of every tree is the same: one
  encryption of all rows, one histogram exchange per level); the trees are checked equal to the pooled core's;
- ``horizontal``: ``--banks`` banks (rows split unevenly) summing histograms, seconds per tree and the ratio
  to pooled xgboost; bins agreed across banks (seconds reported apart);
- ``anchors``: published per-tree figures of FATE, SecretFlow and NVFlare at about this size, and the goals.

All parties run in this one process (workers = ``--workers`` processes for the Paillier loops of each party),
so the vertical seconds are the sum of every party's work -- in a deployment the label holder and the
partners run on their own machines. ``load_average`` says how busy the machine was.

Usage::

    python experiments/benchmarks/gbdt.py --out experiments/benchmarks/results/gbdt.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from fedrisk.models.gbdt import Binner, GBDTParams, boost
from fedrisk.models.gbdt.baseline import train_xgboost
from fedrisk.models.gbdt.booster import PooledSession
from fedrisk.models.gbdt.horizontal import HorizontalSession, bank_summary, merge_bins
from fedrisk.protocol.secureboost import Cost, InProcessLink, SecureBoostPartner, VerticalSession

ANCHORS = {
    "fate_secureboost_paillier_s_per_tree": 232.0,
    "secretflow_sgb_encrypted_s_per_tree": [137.0, 360.0],
    "nvflare_vertical_xgboost_unencrypted_s_per_round": 1.44,
    "goal_encrypted_s_per_tree": 20.0,
    "goal_unencrypted_s_per_tree": 2.0,
    "goal_horizontal_ratio_to_pooled_xgboost": 3.0,
}


def synthetic_table(
    rows: int, n_label: int, n_partner: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(rows, 2))
    label = factor[:, [0]] * rng.uniform(0.2, 0.8, n_label) + rng.normal(size=(rows, n_label))
    partner = factor[:, [1]] * rng.uniform(0.2, 0.8, n_partner) + rng.normal(size=(rows, n_partner))
    for block in (label, partner):
        block[rng.random(block.shape) < 0.05] = np.nan
    y = (rng.random(rows) < 1 / (1 + np.exp(-(-2.2 + factor[:, 0] + factor[:, 1])))).astype(np.int8)
    return (
        pd.DataFrame(label, columns=[f"l{i}" for i in range(n_label)]),
        pd.DataFrame(partner, columns=[f"p{i}" for i in range(n_partner)]),
        y,
    )


def cpu_seconds() -> float:
    """CPU seconds of this process and its live children (the Paillier worker processes)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(child.cpu_times()[:2])
    return total


def timed(fn):
    """(result, wall seconds, CPU seconds of every process involved): on a shared machine the CPU figure is
    the robust one."""
    started, cpu = time.perf_counter(), cpu_seconds()
    out = fn()
    return out, time.perf_counter() - started, cpu_seconds() - cpu


def vertical(codes_l, codes_p, bins_l, bins_p, y, params, protection, key_bits, workers):
    cost = Cost()
    partner = SecureBoostPartner(codes_p, bins_p.n_bins, params.max_bins, workers=workers)
    started = time.perf_counter()
    session = VerticalSession(
        codes_l,
        y,
        bins_l.n_bins,
        params,
        [InProcessLink(partner, cost)],
        protection,
        key_bits,
        cost=cost,
        workers=workers,
    )
    setup_bytes = cost.bytes_to_partners + cost.bytes_from_partners
    setup_s = time.perf_counter() - started  # key generation, worker processes, encryption tables
    try:
        result, wall, cpu = timed(lambda: boost(session, params))
    finally:
        session.close()
        partner.close()
    n = len(result.trees)
    partner_s = sum(v for k, v in cost.seconds.items() if k.startswith("partner_") and k != "partner_setup")
    return result.trees, {
        "protection": protection,
        "key_bits": key_bits if protection == "he" else None,
        "trees": n,
        "seconds_per_tree": wall / n,
        "cpu_seconds_per_tree": cpu / n,
        "setup_seconds": setup_s,
        "encrypt_seconds_per_tree": cost.seconds.get("encrypt", 0.0) / n,
        "decrypt_seconds_per_tree": cost.seconds.get("decrypt", 0.0) / n,
        "partner_seconds_per_tree": partner_s / n,
        "partner_histogram_seconds_per_tree": cost.seconds.get("partner_histograms", 0.0) / n,
        "label_holder_seconds_per_tree": (wall - partner_s) / n,
        "bytes_per_tree": (cost.bytes_to_partners + cost.bytes_from_partners - setup_bytes) / n,
        "bytes_to_partner_per_tree": cost.bytes_to_partners / n,
        "bytes_from_partner_per_tree": cost.bytes_from_partners / n,
    }


def same_trees(a, b) -> bool:
    return all(
        np.array_equal(getattr(x, k), getattr(z, k))
        for x, z in zip(a, b, strict=False)
        for k in ("feature", "bin", "value")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=48_000)
    parser.add_argument("--label-features", type=int, default=30)
    parser.add_argument("--partner-features", type=int, default=45)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--bins", type=int, default=32)
    parser.add_argument(
        "--trees", type=int, default=20, help="trees for pooled, clear vertical and horizontal"
    )
    parser.add_argument("--encrypted-trees", type=int, default=2)
    parser.add_argument("--key-bits", type=int, nargs="*", default=[1024, 2048])
    parser.add_argument("--banks", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="xgboost threads for the pooled baseline")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load_before = os.getloadavg()

    label, partner, y = synthetic_table(args.rows, args.label_features, args.partner_features, args.seed)
    params = GBDTParams(n_trees=args.trees, max_depth=args.depth, max_bins=args.bins, early_stopping_rounds=0)
    (bins_l, bins_p), bin_s, _ = timed(lambda: (Binner(args.bins).fit(label), Binner(args.bins).fit(partner)))
    codes_l, codes_p = bins_l.transform(label), bins_p.transform(partner)
    pooled_codes = np.hstack([codes_l, codes_p])
    n_bins = np.concatenate([bins_l.n_bins, bins_p.n_bins])
    encoded = np.hstack([bins_l.encode(label), bins_p.encode(partner)])

    _, xgb_s, xgb_cpu = timed(lambda: train_xgboost(encoded, y, params, nthread=args.threads))
    core, core_s, core_cpu = timed(lambda: boost(PooledSession(pooled_codes, y, n_bins, params), params))
    xgb_tree = xgb_s / args.trees
    report = {
        "setup": {
            "rows": args.rows,
            "label_holder_features": args.label_features,
            "partner_features": args.partner_features,
            "max_depth": args.depth,
            "max_bins": args.bins,
            "workers_per_party": args.workers,
            "xgboost_threads": args.threads,
            "data": "synthetic numeric table, 5% missing, signal at both holders",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": load_before,
        },
        "binning_seconds": bin_s,
        "pooled": {
            "xgboost_seconds_per_tree": xgb_tree,
            "xgboost_cpu_seconds_per_tree": xgb_cpu / args.trees,
            "core_seconds_per_tree": core_s / args.trees,
            "core_cpu_seconds_per_tree": core_cpu / args.trees,
        },
        "vertical": {},
        "anchors": ANCHORS,
    }

    clear_trees, clear = vertical(codes_l, codes_p, bins_l, bins_p, y, params, "none", 0, args.workers)
    clear["ratio_to_pooled_xgboost"] = clear["seconds_per_tree"] / xgb_tree
    clear["trees_equal_pooled"] = same_trees(clear_trees, core.trees)
    report["vertical"]["none"] = clear
    for bits in args.key_bits:
        enc_params = GBDTParams(
            n_trees=args.encrypted_trees, max_depth=args.depth, max_bins=args.bins, early_stopping_rounds=0
        )
        trees, enc = vertical(codes_l, codes_p, bins_l, bins_p, y, enc_params, "he", bits, args.workers)
        enc["ratio_to_pooled_xgboost"] = enc["seconds_per_tree"] / xgb_tree
        enc["trees_equal_pooled"] = same_trees(trees, core.trees)
        report["vertical"][f"paillier_{bits}"] = enc
        print(f"paillier {bits}: {enc['seconds_per_tree']:.1f} s/tree", flush=True)

    owner = np.random.default_rng(args.seed).choice(
        args.banks, size=args.rows, p=np.random.default_rng(1).dirichlet(np.ones(args.banks) * 2)
    )
    frames = pd.concat([label, partner], axis=1)
    banks = [(frames[owner == b].reset_index(drop=True), y[owner == b]) for b in range(args.banks)]
    agreed, agree_s, _ = timed(
        lambda: merge_bins(
            [bank_summary(f, args.bins, {}, f"bank_{b}") for b, (f, _) in enumerate(banks)], args.bins
        )
    )
    bank_codes = [(agreed.transform(f), yb) for f, yb in banks]
    _, hor_s, hor_cpu = timed(lambda: boost(HorizontalSession(bank_codes, agreed.n_bins, params), params))
    report["horizontal"] = {
        "banks": args.banks,
        "bank_rows": [int(len(yb)) for _, yb in banks],
        "seconds_per_tree": hor_s / args.trees,
        "cpu_seconds_per_tree": hor_cpu / args.trees,
        "ratio_to_pooled_xgboost": hor_s / args.trees / xgb_tree,
        "cpu_ratio_to_pooled_xgboost": hor_cpu / max(xgb_cpu, 1e-9),
        "bin_agreement_seconds": agree_s,
    }
    report["machine"]["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
