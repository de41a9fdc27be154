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


def metric_rows(unit: Unit, approval_rate: float) -> list[dict]:
    """One row per method x party x test split (and per segment of a split, e.g. covered by tax)."""
    rows = []
    for method, outcome in unit.outcomes.items():
        train_scores = outcome.train_scores
        for (party, split), scored in outcome.scores.items():
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


def _headline_sets(unit: Unit, methods: Sequence[str]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{party: {method: (y, p)}} on each party's own test split, restricted to rows every method scored."""
    parties: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for method in methods:
        outcome = unit.outcomes.get(method)
        if outcome is None:
            continue
        for (party, split), scored in outcome.scores.items():
            if split == HEADLINE_SPLIT:
                parties.setdefault(party, {})[method] = (np.asarray(scored.y), np.asarray(scored.p))
    return {p: m for p, m in parties.items() if len(m) == len([x for x in methods if x in unit.outcomes])}


def summarize_point(
    units: Sequence[Unit], methods: Sequence[str], n_boot: int, level: float, approval_rate: float = 0.8
) -> dict:
    """The contract's ``methods``, ``uplift`` and ``parties`` blocks for one sweep point."""
    per_seed = [_headline_sets(u, methods) for u in units]
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
        out["uplift"].update(_business_uplift(per_seed, approval_rate, level))
    parties = sorted({p for scored in per_seed for p in scored})
    if len(parties) > 1:
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


def _uplift(seed_values, reps: Mapping[str, np.ndarray], level: float) -> dict:
    ks_f, ks_s = np.asarray(seed_values("federated", "ks")), np.asarray(seed_values("siloed", "ks"))
    auc_f, auc_s = np.asarray(seed_values("federated", "auc")), np.asarray(seed_values("siloed", "auc"))
    rel_reps = pts_reps = auc_reps = None
    world = getattr(reps, "world", {})
    w = {k: world.get(k, np.nan) for k in ("ks:federated", "ks:siloed", "auc:federated", "auc:siloed")}
    if reps:
        with np.errstate(invalid="ignore", divide="ignore"):
            rel_reps = reps["ks:federated"] / reps["ks:siloed"] - 1
        pts_reps = reps["ks:federated"] - reps["ks:siloed"]
        auc_reps = reps["auc:federated"] - reps["auc:siloed"]
    # ratio of means, as the replicates are; the CI is recomputed around that estimate
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = float(np.nanmean(ks_f) / np.nanmean(ks_s) - 1) if np.isfinite(ks_s).any() else np.nan
        w_rel = w["ks:federated"] / w["ks:siloed"] - 1
        per_seed_ratio = ks_f / ks_s - 1  # infinite when a siloed model is backwards (KS 0): left out
    relative = summarize(per_seed_ratio, None, level)  # std of the per-seed ratios; t-interval fallback
    if relative["mean"] is not None:
        if rel_reps is not None:
            relative = {**summarize([ratio], rel_reps, level, world=w_rel), "std": relative["std"]}
        relative["mean"] = ratio
    return {
        "ks_relative": relative,
        "ks_points": summarize(ks_f - ks_s, pts_reps, level, world=w["ks:federated"] - w["ks:siloed"]),
        "auc_points": summarize(auc_f - auc_s, auc_reps, level, world=w["auc:federated"] - w["auc:siloed"]),
    }


def _business_uplift(per_seed, approval_rate: float, level: float) -> dict:
    """What a lender feels: fewer bads at the same approval rate, more approvals at the same bad rate.

    ``npl_points``: the siloed model's bad rate among approved minus the federated one's, at the configured
    approval rate (percentage points). ``approval_gain``: how many more applicants the federated model can
    approve (relative) while keeping the siloed model's bad rate among approved.
    """
    npl, gain = [], []
    for scored in per_seed:
        npl_parties, gain_parties = [], []
        for by_method in scored.values():
            if "federated" not in by_method or "siloed" not in by_method:
                continue
            y, p_silo = by_method["siloed"]
            _, p_fed = by_method["federated"]
            bad_silo = bad_rate_at_approval(y, p_silo, approval_rate)
            npl_parties.append(100.0 * (bad_silo - bad_rate_at_approval(y, p_fed, approval_rate)))
            gain_parties.append(approval_rate_at_bad_rate(y, p_fed, bad_silo) / approval_rate - 1.0)
        npl.append(float(np.mean(npl_parties)) if npl_parties else np.nan)
        gain.append(float(np.mean(gain_parties)) if gain_parties else np.nan)
    return {
        "npl_points_at_approval": summarize(npl, None, level),
        "approval_gain_at_bad_rate": summarize(gain, None, level),
        "approval_rate": approval_rate,
    }
