"""From the runner's finished units to the results directory's summary: metrics.csv, history.csv, results.json."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from fedrisk import __version__
from fedrisk.config import ExperimentConfig, point_label
from fedrisk.core.jsonio import atomic_write_bytes, atomic_write_json
from fedrisk.evaluation.banks import banks_summary, personalization_summary
from fedrisk.evaluation.out_of_time import out_of_time_summary
from fedrisk.evaluation.summary import Unit, metric_rows, summarize_point
from fedrisk.evaluation.uncertainty import CI_METHOD
from fedrisk.runner.loop import load_audits, load_data, load_units


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def finalize(
    root: Path, config: ExperimentConfig, points, methods: tuple[str, ...], session_seconds: float
) -> dict:
    units = load_units(root, points, methods)
    audit_names = config.audit.enabled()
    audits = load_audits(root, points, audit_names)
    data = load_data(root, points)  # rows per holder, each partner's match rate
    complete = all(set(methods) <= set(u.outcomes) for u in units) and all(
        len(audits.get(point_label(a), {}).get(name, {})) == len(cfg.seeds)
        for a, cfg in points
        for name in audit_names
    )
    _add_measured_leakage(audits, units)  # after `complete`: these entries are not the replay audit's
    rows = [row for u in units for row in metric_rows(u, config.evaluation.approval_rate)]
    atomic_write_bytes(root / "metrics.csv", pd.DataFrame(rows).to_csv(index=False).encode())
    history = [
        {"point": u.point, "seed": u.seed, "method": m, **row}
        for u in units
        for m, o in u.outcomes.items()
        for row in o.history
    ]
    atomic_write_bytes(root / "history.csv", pd.DataFrame(history).to_csv(index=False).encode())
    topology = _topology_of(config, units)
    sweep = []
    for assignment, cfg in points:
        label = point_label(assignment)
        point_units = [u for u in units if u.point == label]
        summary = summarize_point(
            point_units,
            methods,
            cfg.evaluation.n_bootstrap,
            cfg.evaluation.ci_level,
            cfg.evaluation.approval_rate,
        )
        summary["cost"] = _cost(point_units)
        ev = cfg.evaluation  # the later cohort beside the in-time test; the per-bank view; personalisation
        summary["out_of_time"] = out_of_time_summary(
            point_units, methods, ev.n_bootstrap, ev.ci_level, ev.approval_rate
        )
        summary["banks"] = banks_summary(point_units, summary["parties"], ev.ci_level)
        summary["personalization"] = personalization_summary(point_units)
        summary["audits"] = audits.get(label, {})
        summary["label_protection"] = label_protection_summary(cfg, summary["audits"])
        importance = _importance(point_units)
        if importance:
            summary["importance"] = importance
        summary["data"] = data.get(label, {})
        sweep.append({"point": label, "assignment": assignment, **summary})
    head = sweep[0]
    results = {
        "fedrisk_version": __version__,
        "name": config.name,
        "config": config.model_dump(mode="json"),
        "topology": topology,
        "seeds": list(config.seeds),
        "methods": head["methods"],
        "uplift": head["uplift"],
        **{key: head[key] for key in head if key.startswith("uplift_")},  # e.g. uplift_personalized
        "parties": head["parties"],
        "data": head["data"],
        **{key: head[key] for key in ("out_of_time", "banks", "personalization") if head.get(key)},
        "cost": {**head["cost"], "session_wall_seconds": session_seconds},
        "ci_method": CI_METHOD,
        "sweep": sweep if config.sweep else [],
        # one shape whether or not a sweep ran: {audit: {"seed=<s>": result}} of the first point; every
        # sweep entry carries its own point's block of the same shape
        "audits": head["audits"],
        **({"importance": head["importance"]} if "importance" in head else {}),
        "label_protection": head["label_protection"],
        "finished": _now(),
        "complete": complete,
    }
    atomic_write_json(root / "results.json", results)
    return results


def _add_measured_leakage(audits: dict[str, dict[str, dict]], units: list[Unit]) -> None:
    """``audits.label_leakage["seed=<s>"]``: the leak measured on the partners' messages in the federated run.

    Its ``defence`` is the run's protection and ``leak.<partner>`` holds ``norm_auc`` / ``direction_auc``;
    when the label-leakage audit (a replay of other defences) also ran, its fields sit beside these.
    """
    for unit in units:
        fed = unit.outcomes.get("federated")
        measured = fed.extra.get("label_leakage") if fed is not None else None
        if not measured:
            continue
        entries = audits.setdefault(unit.point, {}).setdefault("label_leakage", {})
        key = f"seed={unit.seed}"
        entries[key] = {**entries.get(key, {}), **measured}


def label_protection_summary(config: ExperimentConfig, audits: dict) -> dict | None:
    """The run's label protection and the worst leak its partners' messages allowed, over seeds.

    Printed beside the uplift, so an uplift bought with readable labels is not mistaken for a private one.
    None for runs without a measured leak (horizontal, or no federated run).
    """
    entries = [e for e in audits.get("label_leakage", {}).values() if "leak" in e and "defence" in e]
    if not entries:
        return None
    worst: dict[str, float] = {}
    for entry in entries:
        for view in entry["leak"].values():
            for attack in ("norm_auc", "direction_auc"):
                if view.get(attack) is not None:
                    worst[attack] = max(worst.get(attack, 0.0), float(view[attack]))
    return {
        "protection": config.federation.vertical.protection,
        "worst_leak_auc": worst,
        "seeds": len(entries),
    }


def _topology_of(config: ExperimentConfig, units: list[Unit]) -> str:
    if config.topology != "auto":
        return config.topology
    for unit in units:
        for outcome in unit.outcomes.values():
            parties = {key.party for key in outcome.scores}
            return "horizontal" if len(parties) > 1 else "vertical"
    return "vertical"


def _cost(units: list[Unit]) -> dict:
    fed = [u.outcomes["federated"].cost for u in units if "federated" in u.outcomes]
    all_costs = [o.cost for u in units for o in u.outcomes.values()]
    epsilons = [c.get("epsilon") for c in fed if c.get("epsilon") is not None]
    encryption = [c["encryption_seconds"] for c in fed if "encryption_seconds" in c]  # protection "he"
    return {
        "wall_seconds": float(sum(c.get("wall_seconds", 0.0) for c in all_costs)),
        "federated_wall_seconds": float(np.mean([c.get("wall_seconds", 0.0) for c in fed])) if fed else None,
        "bytes_sent": int(np.mean([c.get("bytes_sent", 0) for c in fed])) if fed else 0,
        "epsilon": float(max(epsilons)) if epsilons else None,
        "delta": next((c.get("delta") for c in fed if c.get("delta") is not None), None),
        **_per_tree(fed),
        "encryption_seconds": float(np.mean(encryption)) if encryption else None,
    }


TREE_COSTS = (
    "trees",
    "seconds_per_tree",
    "encrypt_seconds_per_tree",
    "decrypt_seconds_per_tree",
    "bytes_per_tree",
)


def _per_tree(fed: list[dict]) -> dict:
    """Gradient-boosted trees: mean over seeds of the federated run's cost per tree (absent for other models)."""
    out = {}
    for key in TREE_COSTS:
        values = [c[key] for c in fed if c.get(key) is not None]
        if values:
            out[key] = float(np.mean(values))
    protection = {c.get("protection") for c in fed if c.get("protection")}
    if protection:
        out["protection"] = sorted(protection)[0]
        out["key_bits"] = next((c.get("key_bits") for c in fed if c.get("key_bits")), None)
    return out


def _importance(units: list[Unit]) -> dict:
    """Per method: each holder's mean share of the trees' split gain (gradient-boosted trees only)."""
    out: dict[str, dict[str, float]] = {}
    for method in sorted({m for u in units for m in u.outcomes}):
        shares = [u.outcomes[m].extra["importance"] for u in units for m in [method] if m in u.outcomes
                  and "importance" in u.outcomes[m].extra]  # fmt: skip
        if shares:
            holders = sorted({h for s in shares for h in s})
            out[method] = {h: float(np.mean([s.get(h, 0.0) for s in shares])) for h in holders}
    return out
