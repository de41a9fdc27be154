"""The per-bank view of a personalised horizontal run: results.json blocks, the report's tables and figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedrisk.config.experiment import ExperimentConfig
from fedrisk.core.jsonio import atomic_write_json, fingerprint
from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey
from fedrisk.evaluation.results import finalize
from fedrisk.report.build import build_report
from fedrisk.report.fmt import fmt_ci
from fedrisk.runner.units import save_outcome, unit_dir

METHODS = ("siloed", "centralized", "federated", "personalized")
BANKS = {"bank_1": 1500, "bank_2": 150, "bank_3": 600}
# how well each method separates bads at each bank: the global model loses at the large bank_1,
# personalisation gets it back; the small bank_2 gains from federation
STRENGTH = {
    "bank_1": {"siloed": 1.6, "federated": 1.2, "personalized": 1.6, "centralized": 1.3},
    "bank_2": {"siloed": 0.4, "federated": 1.5, "personalized": 1.5, "centralized": 1.5},
    "bank_3": {"siloed": 1.0, "federated": 1.3, "personalized": 1.35, "centralized": 1.3},
}


def _outcome(method: str, seed: int) -> MethodOutcome:
    scores = {}
    for b, (bank, n) in enumerate(BANKS.items()):
        for s, split in enumerate(("test", "oot")):
            rng = np.random.default_rng([seed, b, s])
            y = (rng.random(n) < 0.15).astype(np.int8)
            noise = np.random.default_rng([seed, b, s, METHODS.index(method)]).normal(size=n)
            later = 0.7 if split == "oot" else 1.0
            p = 1 / (1 + np.exp(-(later * STRENGTH[bank][method] * y + noise - 2)))
            scores[ScoreKey(bank, split)] = ScoredSet(np.array([f"{bank}-{i}" for i in range(n)]), y, p)
    extra = {}
    if method == "personalized":
        extra["personalization"] = {
            "mode": "finetune",
            "banks": {
                "bank_1": {"model": "personal", "epochs": 6},
                "bank_2": {"model": "global", "epochs": 0, "fallback": "8 defaults in its rows (needs 20)"},
                "bank_3": {"model": "recalibrated", "epochs": 0},
            },
            "clusters": [],
        }
    return MethodOutcome(
        method, scores, cost={"wall_seconds": 1.0, "bytes_sent": 0, "epsilon": None}, extra=extra
    )


def _run(root: Path) -> Path:
    config = ExperimentConfig(
        name="banks",
        topology="horizontal",
        seeds=[0, 1, 2],
        world={"n_banks": 3},
        evaluation={"n_bootstrap": 40},
        federation={"horizontal": {"personalization": "finetune"}},
    )
    dump = config.model_dump(mode="json")
    atomic_write_json(root / "run.json", {"fingerprint": fingerprint(dump), "config": dump})
    for seed in config.seeds:
        for method in METHODS:
            save_outcome(unit_dir(root, "base", seed), _outcome(method, seed))
    finalize(root, config, [({}, config)], METHODS, 5.0)
    build_report(root)
    return root


def test_results_and_report_show_whether_federation_pays_per_bank(tmp_path: Path) -> None:
    root = _run(tmp_path / "run")
    results = json.loads((root / "results.json").read_text())
    assert set(results["methods"]) == set(METHODS)
    assert results["uplift_personalized"]["ks_points"]["mean"] > results["uplift"]["ks_points"]["mean"]
    verdicts = results["banks"]["verdicts"]
    assert verdicts["bank_1"]["federated"] == "costs" and verdicts["bank_1"]["personalized"] != "costs"
    assert verdicts["bank_2"]["federated"] == "pays" and verdicts["bank_2"]["personalized"] == "pays"
    smallest = results["banks"]["smallest"]
    assert smallest["banks"] == ["bank_2"] and smallest["ks_points"]["personalized"]["mean"] > 0.1
    assert results["personalization"]["fallbacks"] == [
        {"seed": s, "bank": "bank_2", "reason": "8 defaults in its rows (needs 20)"} for s in (0, 1, 2)
    ]
    assert results["personalization"]["kept"]["bank_1"] == {"personal": 3}
    oot = results["out_of_time"]
    assert oot["methods"]["federated"]["ks"]["mean"] < results["methods"]["federated"]["ks"]["mean"]

    md = (root / "report.md").read_text()
    section = md.split("## Per bank: does federation pay?", 1)[1]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| bank_")]
    assert [r[0].strip() for r in rows] == ["bank_2", "bank_3", "bank_1"]  # smallest first
    bank_1 = [c.strip() for c in rows[2]]
    assert bank_1[4] == fmt_ci(results["parties"]["bank_1"]["methods"]["personalized"]["ks"])
    assert bank_1[6] == fmt_ci(results["parties"]["bank_1"]["uplift"]["ks_points"])
    assert bank_1[7] == fmt_ci(results["parties"]["bank_1"]["uplift_personalized"]["ks_points"])
    assert "smallest banks' view" in section and "bank_2 (seed 0: 8 defaults" in section
    assert "## Out of time" in md and fmt_ci(oot["methods"]["siloed"]["ks"]) in md
    assert (root / "figures" / "uplift_vs_size.png").stat().st_size > 10_000
    assert "](figures/uplift_vs_size.png)" in md
