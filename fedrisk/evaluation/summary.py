"""From finished units to the contract's numbers: metrics rows, per-method summaries, uplift with CIs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedrisk.core.metrics import (
    approval_rate_at_bad_rate,
    bad_rate_at_approval,
    credit_metrics,
    population_stability_index,
)
from fedrisk.evaluation.uncertainty import bootstrap_ks_auc, summarize
from fedrisk.runner.units import Unit

HEADLINE_SPLIT = "test"
"""The split the contract's numbers are computed on: each label holder's own held-out applicants."""

VALIDATION_SPLIT = "val"
"""Scored too, but only to choose approval thresholds (never reported as a metric)."""


def metric_rows(unit: Unit, approval_rate: float) -> list[dict]:
    """One row per method x party x test split (and per segment of a split, e.g. covered by tax)."""
    rows = []
    for method, outcome in unit.outcomes.items():
        train_scores = outcome.train_scores
        for (party, split), scored in outcome.scores.items():
            if split == VALIDATION_SPLIT:
                continue
            base = {"point": unit.point, **{f"sweep:{k}": v for k, v in unit.assignment.items()}}
            base.update({"seed": unit.seed, "method": method, "party": party})
            metrics = credit_metrics(scored.y, scored.p, approval_rate)
            psi = population_stability_index(train_scores, scored.p) if train_scores is not None else np.nan
            rows.append(
                {
                    **base,
                    "split": split,
                    "n": len(scored.y),
                    "bad_rate": float(np.mean(scored.y)),
                    **metrics,
                    "psi": psi,
                }
            )
            for segment, mask in scored.segments.items():
                if mask.sum() == 0:
                    continue
                seg_metrics = credit_metrics(scored.y[mask], scored.p[mask], approval_rate)
                rows.append(
                    {
                        **base,
                        "split": f"{split}[{segment}]",
                        "n": int(mask.sum()),
                        "bad_rate": float(np.mean(scored.y[mask])),
                        **seg_metrics,
                        "psi": np.nan,
                    }
                )
    return rows


def _headline_sets(
    unit: Unit, methods: Sequence[str], wanted: str = HEADLINE_SPLIT
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{party: {method: (y, p)}} on each party's own ``wanted`` split, for parties every method scored."""
    parties: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for method in methods:
        outcome = unit.outcomes.get(method)
        if outcome is None:
            continue
        for (party, split), scored in outcome.scores.items():
            if split == wanted:
                parties.setdefault(party, {})[method] = (np.asarray(scored.y), np.asarray(scored.p))
    return {p: m for p, m in parties.items() if len(m) == len([x for x in methods if x in unit.outcomes])}


def summarize_point(
    units: Sequence[Unit],
    methods: Sequence[str],
    n_boot: int,
    level: float,
    approval_rate: float = 0.8,
    split: str = HEADLINE_SPLIT,
    with_parties: bool = True,
) -> dict:
    """The contract's ``methods``, ``uplift`` and ``parties`` blocks for one sweep point.

    ``split`` = ``"oot"`` gives the same blocks on the out-of-time applicants; ``with_parties`` = False
    skips the per-party blocks (and their bootstraps)."""
    per_seed = [_headline_sets(u, methods, split) for u in units]
    reps = bootstrap_ks_auc(per_seed, n_boot=n_boot) if n_boot > 0 else {}

    cache: dict[tuple[int, str, str], dict[str, float]] = {}

    def metrics_of(index: int, party: str, method: str) -> dict[str, float]:
        key = (index, party, method)
        if key not in cache:
            cache[key] = credit_metrics(*per_seed[index][party][method], approval_rate)
        return cache[key]

    def seed_values(method: str, metric: str, party: str | None = None) -> list[float]:
        values = []
        for index, scored in enumerate(per_seed):
            if party is None:
                chosen = list(scored)
            else:
                chosen = [party] if party in scored else []
            per_party = [metrics_of(index, p, method)[metric] for p in chosen if method in scored[p]]
            values.append(float(np.mean(per_party)) if per_party else np.nan)
        return values

    out: dict = {"methods": {}, "uplift": {}, "parties": {}}
    present = [m for m in methods if any(m in u.outcomes for u in units)]
    for method in present:
        block = _ks_auc_blocks(seed_values, method, reps, level)
        for metric in ("brier", "bad_rate_at_approval", "lift_top_decile"):
            block[metric] = summarize(seed_values(method, metric), None, level)
        block["flags"] = method_flags(block)
        out["methods"][method] = block
    if "federated" in present and "siloed" in present:
        out["uplift"] = _uplift(seed_values, reps, level)
        val_sets = [_headline_sets(u, methods, VALIDATION_SPLIT) for u in units]
        out["uplift"].update(_business_uplift(per_seed, val_sets, approval_rate, level))
    if "personalized" in present and "siloed" in present:  # personalised federation beside federated
        out["uplift_personalized"] = _uplift(seed_values, reps, level, "personalized")
    parties = sorted({p for scored in per_seed for p in scored})
    if len(parties) > 1 and with_parties:
        for party in parties:
            party_sets = [{party: s[party]} for s in per_seed if party in s]
            party_reps = bootstrap_ks_auc(party_sets, n_boot=n_boot, seed=7) if n_boot > 0 else {}

            def party_values(method: str, metric: str, _party: str = party) -> list[float]:
                return seed_values(method, metric, _party)

            block = {
                "n_test": int(np.mean([len(s[party][present[0]][0]) for s in per_seed if party in s])),
                "methods": {m: _ks_auc_blocks(party_values, m, party_reps, level) for m in present},
            }
            for m_block in block["methods"].values():
                m_block.pop("gini")
                m_block["flags"] = method_flags(m_block)
            if "federated" in present and "siloed" in present:
                block["uplift"] = _uplift(party_values, party_reps, level)
            if "personalized" in present and "siloed" in present:
                block["uplift_personalized"] = _uplift(party_values, party_reps, level, "personalized")
            out["parties"][party] = block
    return out


FLAG_AUC_BELOW_HALF = "auc_below_0.5"
"""A method that ranks worse than chance: its scores read backwards (e.g. a diverged or poisoned model)."""


def method_flags(block: Mapping) -> list[str]:
    """Warnings a reader must see beside a method's numbers (results.json ``methods.<m>.flags``)."""
    auc = (block.get("auc") or {}).get("mean")
    return [FLAG_AUC_BELOW_HALF] if auc is not None and auc < 0.5 else []


def _ks_auc_blocks(seed_values, method: str, reps: Mapping, level: float) -> dict:
    """KS and AUC summaries with the bootstrap's interval (its world value as the centre), plus Gini."""
    world = getattr(reps, "world", {})
    block = {
        metric: summarize(
            seed_values(method, metric),
            reps.get(f"{metric}:{method}"),
            level,
            world=world.get(f"{metric}:{method}"),
            bounds=(0.0, 1.0),
        )
        for metric in ("ks", "auc")
    }
    block["gini"] = _gini_from_auc(block["auc"])
    return block


def _gini_from_auc(auc: dict) -> dict:
    if auc["mean"] is None:
        return auc
    return {
        "mean": 2 * auc["mean"] - 1,
        "std": 2 * auc["std"],
        "ci": [None if c is None else 2 * c - 1 for c in auc["ci"]],
    }


def _uplift(seed_values, reps: Mapping[str, np.ndarray], level: float, method: str = "federated") -> dict:
    ks_f, ks_s = np.asarray(seed_values(method, "ks")), np.asarray(seed_values("siloed", "ks"))
    auc_f, auc_s = np.asarray(seed_values(method, "auc")), np.asarray(seed_values("siloed", "auc"))
    rel_reps = pts_reps = auc_reps = None
    world = getattr(reps, "world", {})
    m = method
    w = {k: world.get(k, np.nan) for k in (f"ks:{m}", "ks:siloed", f"auc:{m}", "auc:siloed")}
    if reps:
        with np.errstate(invalid="ignore", divide="ignore"):
            rel_reps = reps[f"ks:{m}"] / reps["ks:siloed"] - 1
        pts_reps = reps[f"ks:{m}"] - reps["ks:siloed"]
        auc_reps = reps[f"auc:{m}"] - reps["auc:siloed"]
    # ratio of means, as the replicates are; the CI is recomputed around that estimate
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = float(np.nanmean(ks_f) / np.nanmean(ks_s) - 1) if np.isfinite(ks_s).any() else np.nan
        w_rel = w[f"ks:{m}"] / w["ks:siloed"] - 1
        per_seed_ratio = ks_f / ks_s - 1  # infinite when a siloed model is backwards (KS 0): left out
    relative = summarize(per_seed_ratio, None, level)  # std of the per-seed ratios; t-interval fallback
    if relative["mean"] is not None:
        if rel_reps is not None:
            # basic interval on the log scale, where a ratio's bootstrap distribution is near symmetric
            # (on the raw scale it is right-skewed, and the interval covered 0.87-0.88 at 36-40 defaults)
            # a federated KS of 0 (a backwards model) is a ratio of -1: kept just above it, not -inf
            def log_scale(x):
                return np.log1p(np.maximum(x, -1 + 1e-9))

            with np.errstate(invalid="ignore", divide="ignore"):
                log_block = summarize([log_scale(ratio)], log_scale(rel_reps), level, world=log_scale(w_rel))
            ci = [None if c is None else float(np.expm1(c)) for c in log_block["ci"]]
            relative = {**log_block, "ci": ci, "std": relative["std"]}
            relative["bias"] = float(np.nanmean(rel_reps)) - float(w_rel) if np.isfinite(w_rel) else None
        relative["mean"] = ratio
    return {
        "ks_relative": relative,
        "ks_points": summarize(ks_f - ks_s, pts_reps, level, world=w[f"ks:{m}"] - w["ks:siloed"]),
        "auc_points": summarize(auc_f - auc_s, auc_reps, level, world=w[f"auc:{m}"] - w["auc:siloed"]),
    }


def _business_uplift(per_seed, val_sets, approval_rate: float, level: float) -> dict:
    """What a lender feels: fewer bads at the same approval rate, more approvals at the same bad rate.

    ``npl_points``: the siloed model's bad rate among approved minus the federated one's, each approving its
    safest ``approval_rate`` of the test applicants (percentage points; no label picks the cut).
    ``approval_gain``: how many more test applicants the federated model approves (relative) at the siloed
    model's bad rate. Both score cut-offs are chosen on the validation applicants, never on test labels:
    the siloed cut approves ``approval_rate`` of them, the federated cut the most it can while keeping their
    bad rate at or below the siloed one's. ``approval_bad_rate`` gives the bad rates the two cuts then have
    on the test applicants, so a reader can see whether the federated cut held the siloed bad rate.
    """
    npl, gain, bad_silo_test, bad_fed_test = [], [], [], []
    for scored, val in zip(per_seed, val_sets, strict=True):
        npl_parties, gain_parties, silo_parties, fed_parties = [], [], [], []
        for party, by_method in scored.items():
            if "federated" not in by_method or "siloed" not in by_method:
                continue
            y, p_silo = by_method["siloed"]
            _, p_fed = by_method["federated"]
            npl_parties.append(
                100.0
                * (
                    bad_rate_at_approval(y, p_silo, approval_rate)
                    - bad_rate_at_approval(y, p_fed, approval_rate)
                )
            )
            own_val = val.get(party, {})
            if "federated" not in own_val or "siloed" not in own_val:
                continue  # a method that does not score its validation applicants: no honest cut-off
            cut_silo, cut_fed = approval_cutoffs(own_val["siloed"], own_val["federated"][1], approval_rate)
            approved_silo, approved_fed = p_silo <= cut_silo, p_fed <= cut_fed
            if approved_silo.any():
                gain_parties.append(approved_fed.mean() / approved_silo.mean() - 1.0)
                silo_parties.append(float(y[approved_silo].mean()))
            if approved_fed.any():
                fed_parties.append(float(y[approved_fed].mean()))
        for values, parties in ((npl, npl_parties), (gain, gain_parties)):
            values.append(float(np.mean(parties)) if parties else np.nan)
        for values, parties in ((bad_silo_test, silo_parties), (bad_fed_test, fed_parties)):
            values.append(float(np.mean(parties)) if parties else np.nan)
    return {
        "npl_points_at_approval": summarize(npl, None, level),
        "approval_gain_at_bad_rate": summarize(gain, None, level),
        "approval_bad_rate": {
            "siloed": summarize(bad_silo_test, None, level),
            "federated": summarize(bad_fed_test, None, level),
        },
        "approval_threshold_from": VALIDATION_SPLIT,
        "approval_rate": approval_rate,
    }


def approval_cutoffs(
    siloed_val: tuple[np.ndarray, np.ndarray], p_fed_val: np.ndarray, approval_rate: float
) -> tuple[float, float]:
    """Score cut-offs (approve ``p <= cut``) chosen on validation applicants.

    The siloed cut approves its safest ``approval_rate``; the federated cut approves as many as it can while
    its bad rate among them stays at or below the siloed cut's (ties counted at their average outcome).
    """
    y_val, p_silo_val = siloed_val
    n = len(y_val)
    k_silo = max(1, int(round(approval_rate * n)))
    cut_silo = float(np.sort(p_silo_val)[k_silo - 1])
    target = bad_rate_at_approval(y_val, p_silo_val, approval_rate)
    k_fed = int(round(approval_rate_at_bad_rate(y_val, p_fed_val, target) * n))
    cut_fed = float(np.sort(p_fed_val)[k_fed - 1]) if k_fed > 0 else -np.inf
    return cut_silo, cut_fed
