"""How often do fedrisk's intervals contain the truth? A simulation with a known population KS and AUC.

Scores are binormal on the log-odds scale: a good applicant's two signals are N(0, 1), a bad applicant's
are N(m1, 1) and N(m2, 1), independent. ``siloed`` scores the first signal alone, ``federated`` the sum of
both, so both methods rank the same applicants (paired) and the truths are closed-form:
KS = 2 Phi(d / 2) - 1 and AUC = Phi(d / sqrt 2) for a standardised separation d (m1 for siloed,
(m1 + m2) / sqrt 2 for federated). Each seed can draw its own separations (``seed_sd``), as a new world and
training run would; the target is then the expected population value over seeds.

Each replication builds one result per seed and summarises them exactly as a run does
(`fedrisk.evaluation.summary.summarize_point`), so the coverage measured is that of results.json.
docs/statistics.md quotes figures from ``python -m fedrisk.evaluation.coverage``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.special import expit, ndtr

from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey
from fedrisk.evaluation.summary import summarize_point
from fedrisk.runner.units import Unit

METHODS = ("siloed", "federated")


def _truths(m1: np.ndarray, m2: np.ndarray) -> dict[str, np.ndarray]:
    d_fed = (m1 + m2) / np.sqrt(2.0)
    ks_s, ks_f = 2 * ndtr(m1 / 2) - 1, 2 * ndtr(d_fed / 2) - 1
    return {
        "ks:siloed": ks_s,
        "ks:federated": ks_f,
        "auc:siloed": ndtr(m1 / np.sqrt(2.0)),
        "auc:federated": ndtr(d_fed / np.sqrt(2.0)),
        "ks_points": ks_f - ks_s,
    }


def simulate_coverage(
    n_bad: int,
    n_good: int,
    n_seeds: int = 1,
    replications: int = 200,
    n_boot: int = 200,
    separation: tuple[float, float] = (1.05, 0.6),
    seed_sd: float = 0.0,
    level: float = 0.95,
    seed: int = 0,
    n_banks: int = 1,
) -> dict:
    """Coverage and mean width of every interval of a run, over ``replications`` simulated runs.

    ``n_banks > 1`` is a horizontal run: every bank holds its own ``n_bad`` + ``n_good`` test applicants
    from the same population, and a method's KS is the mean of the banks' KS on their own applicants, as in
    results.json (the truth is unchanged: each bank's population KS is the same).

    Returns ``{"coverage": {name: share}, "width": {name: mean width}, "truth": {name: value}, ...}`` for
    ``ks:<method>``, ``auc:<method>``, ``ks_points`` and ``ks_relative``.
    """
    rng = np.random.default_rng(seed)
    m1, m2 = separation
    draws = rng.normal(size=(2, 400_000)) * seed_sd
    truth = {k: float(v.mean()) for k, v in _truths(m1 + draws[0], m2 + draws[1]).items()}
    truth["ks_relative"] = truth["ks:federated"] / truth["ks:siloed"] - 1
    hits: dict[str, list[bool]] = {k: [] for k in truth}
    widths: dict[str, list[float]] = {k: [] for k in truth}
    y = np.r_[np.ones(n_bad), np.zeros(n_good)].astype(np.int8)
    ids = np.arange(len(y)).astype(str)
    started = time.perf_counter()
    for _ in range(replications):
        units = []
        for s in range(n_seeds):
            shift = rng.normal(size=2) * seed_sd
            scored: dict[str, dict[ScoreKey, ScoredSet]] = {m: {} for m in METHODS}
            for bank in range(n_banks):
                first = rng.normal(size=len(y)) + y * (m1 + shift[0])
                second = rng.normal(size=len(y)) + y * (m2 + shift[1])
                key = ScoreKey("bank" if n_banks == 1 else f"bank_{bank + 1}", "test")
                scored["siloed"][key] = ScoredSet(ids, y, expit(first - 3.0))
                scored["federated"][key] = ScoredSet(ids, y, expit((first + second) / np.sqrt(2.0) - 3.0))
            outcomes = {m: MethodOutcome(m, scored[m]) for m in METHODS}
            units.append(Unit("base", {}, s, outcomes))
        summary = summarize_point(units, METHODS, n_boot, level)
        blocks = {f"{k}:{m}": summary["methods"][m][k] for m in METHODS for k in ("ks", "auc")}
        blocks.update({k: summary["uplift"][k] for k in ("ks_points", "ks_relative")})
        for name, block in blocks.items():
            lo, hi = block["ci"]
            hits[name].append(lo <= truth[name] <= hi)
            widths[name].append(hi - lo)
    return {
        "n_bad": n_bad,
        "n_good": n_good,
        "n_seeds": n_seeds,
        "n_banks": n_banks,
        "replications": replications,
        "n_boot": n_boot,
        "seed_sd": seed_sd,
        "level": level,
        "truth": truth,
        "coverage": {k: float(np.mean(v)) for k, v in hits.items()},
        "width": {k: float(np.mean(v)) for k, v in widths.items()},
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Coverage of fedrisk's intervals by simulation (JSON out).")
    parser.add_argument("--n-bad", type=int, nargs="+", default=[36, 380])
    parser.add_argument("--bad-rate", type=float, default=0.06)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--seed-sd", type=float, default=0.0)
    parser.add_argument("--replications", type=int, default=400)
    parser.add_argument("--n-boot", type=int, default=400)
    parser.add_argument("--banks", type=int, default=1, help="> 1: a horizontal run, KS averaged over banks")
    args = parser.parse_args()
    results = []
    for n_bad in args.n_bad:
        n_good = int(round(n_bad * (1 - args.bad_rate) / args.bad_rate))
        for n_seeds in args.seeds:
            out = simulate_coverage(
                n_bad,
                n_good,
                n_seeds,
                args.replications,
                args.n_boot,
                seed_sd=args.seed_sd,
                n_banks=args.banks,
            )
            results.append(out)
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
