"""A backwards model is flagged and never counted as an uplift; intervals say how they were made."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from fedrisk.cli import print_summary
from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey
from fedrisk.evaluation.summary import FLAG_AUC_BELOW_HALF, summarize_point
from fedrisk.evaluation.uncertainty import CI_METHOD
from fedrisk.runner.units import Unit

METHODS = ("siloed", "centralized", "federated")


def _units(backwards: str | None, n_seeds: int = 3, n: int = 1500) -> list[Unit]:
    rng = np.random.default_rng(0)
    units = []
    for seed in range(n_seeds):
        y = (rng.random(n) < 0.1).astype(np.int8)
        base = rng.normal(size=n)
        scores = {"siloed": base + 0.6 * y, "centralized": base + 1.0 * y, "federated": base + 1.0 * y}
        if backwards:
            scores[backwards] = -scores[backwards]  # e.g. what weight_decay = 1e30 used to produce
        ids = np.arange(n).astype(str)
        outcomes = {
            m: MethodOutcome(m, {ScoreKey("bank", "test"): ScoredSet(ids, y, expit(s - 2))})
            for m, s in scores.items()
        }
        units.append(Unit("base", {}, seed, outcomes))
    return units


def test_backwards_federated_model_is_flagged_and_its_uplift_is_negative():
    out = summarize_point(_units("federated"), METHODS, n_boot=100, level=0.95)
    fed = out["methods"]["federated"]
    assert fed["flags"] == [FLAG_AUC_BELOW_HALF]
    assert out["methods"]["siloed"]["flags"] == [] and out["methods"]["centralized"]["flags"] == []
    assert fed["auc"]["mean"] < 0.4
    assert fed["ks"]["mean"] < 0.05  # directional KS: not the mirror image's ~0.35
    # max |TPR - FPR| reported this as a large positive uplift; now it is a loss
    assert out["uplift"]["ks_relative"]["mean"] < -0.8
    assert out["uplift"]["ks_relative"]["ci"][1] < 0


def test_healthy_run_has_no_flags_and_intervals_within_range():
    out = summarize_point(_units(None), METHODS, n_boot=100, level=0.95)
    for block in out["methods"].values():
        assert block["flags"] == []
        for metric in ("ks", "auc"):
            lo, hi = block[metric]["ci"]
            assert 0.0 <= lo <= block[metric]["mean"] <= hi <= 1.0
            assert "bias" in block[metric]
    assert out["methods"]["siloed"]["ks"]["bias"] > 0  # the empirical KS overstates; the bootstrap sees it
    assert out["uplift"]["ks_points"]["ci"][0] > 0


def test_cli_summary_warns_about_a_backwards_method(capsys):
    out = summarize_point(_units("siloed"), METHODS, n_boot=0, level=0.95)
    results = {
        "name": "x",
        "topology": "vertical",
        "seeds": [0, 1, 2],
        "complete": True,
        "cost": {},
        **out,
    }
    print_summary(results)
    text = capsys.readouterr().out
    assert "siloed has AUC below 0.5" in text
    assert "federated has AUC below" not in text


def test_ci_method_names_the_interval():
    assert "smoothed bootstrap, basic interval" in CI_METHOD


@pytest.mark.parametrize("n_boot", [0, 50])
def test_relative_uplift_is_the_ratio_of_mean_ks(n_boot: int):
    out = summarize_point(_units(None), METHODS, n_boot=n_boot, level=0.95)
    ks_f, ks_s = out["methods"]["federated"]["ks"]["mean"], out["methods"]["siloed"]["ks"]["mean"]
    rel = out["uplift"]["ks_relative"]
    assert rel["mean"] == pytest.approx(ks_f / ks_s - 1)
    assert rel["std"] > 0


def _units_with_val(
    rng: np.random.Generator, n_seeds: int = 4, n: int = 3000, fed_signal: float = 0.6
) -> list:
    units = []
    for seed in range(n_seeds):
        outcomes: dict = {}
        sets = {}
        for split in ("val", "test"):
            y = (rng.random(n) < 0.08).astype(np.int8)
            base = rng.normal(size=n) + 0.8 * y
            sets[split] = (y, {"siloed": base, "federated": base + rng.normal(size=n) + fed_signal * y})
        for m in ("siloed", "federated"):
            outcomes[m] = MethodOutcome(
                m,
                {
                    ScoreKey("bank", split): ScoredSet(np.arange(n).astype(str), y, expit(s[m] - 3))
                    for split, (y, s) in sets.items()
                },
            )
        units.append(Unit("base", {}, seed, outcomes))
    return units


def test_approval_cutoffs_come_from_validation_never_test_labels():
    units = _units_with_val(np.random.default_rng(3))
    before = summarize_point(units, ("siloed", "federated"), n_boot=0, level=0.95)["uplift"]
    rng = np.random.default_rng(9)
    for unit in units:  # scramble every test label: scores (hence approvals) unchanged
        for outcome in unit.outcomes.values():
            scored = outcome.scores[ScoreKey("bank", "test")]
            scored.y = rng.permutation(scored.y)
    after = summarize_point(units, ("siloed", "federated"), n_boot=0, level=0.95)["uplift"]
    assert before["approval_threshold_from"] == "val"
    assert after["approval_gain_at_bad_rate"]["mean"] == before["approval_gain_at_bad_rate"]["mean"]
    assert after["approval_bad_rate"] != before["approval_bad_rate"]  # the realised bad rates do use them


def test_metric_rows_leave_out_the_validation_split():
    from fedrisk.evaluation.summary import metric_rows

    unit = _units_with_val(np.random.default_rng(5), n_seeds=1)[0]
    assert {row["split"] for row in metric_rows(unit, 0.8)} == {"test"}
