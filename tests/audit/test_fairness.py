"""Fairness audit: group metrics equal hand-computed ones; the cut-off is per bank; the gap verdict follows.

Measured on the default world (30k firms, seeds 0-3), rural minus urban approval rate at 80% approval:
horizontal (5 banks) siloed -7.5/-4.9/-9.3/-4.3 points vs federated -11.5/-9.3/-16.2/-5.0 (widens in 4 of
4); vertical (bank + tax + supply chain) siloed -8.9/-7.5/-10.4 vs federated -4.8/-6.5/-5.9 (narrows in
3 of 3). Those runs take minutes; the tests here use hand-made outcomes.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedrisk.audit.fairness import FairnessConfig, approve_safest, fairness_audit, group_metrics
from fedrisk.config.experiment import validate
from fedrisk.data.outcome import MethodOutcome, ScoredSet
from fedrisk.data.setting import Setting
from fedrisk.data.table import PartyTable


def _bank(name: str, ids: list[str], region: list[str], size: list[float]) -> PartyTable:
    features = pd.DataFrame(
        {"region_type": pd.Categorical(region), "firm_age": np.asarray(size, dtype=float), "x": 0.0}
    )
    return PartyTable(name, np.asarray(ids, dtype=object), features, label=np.zeros(len(ids), dtype=np.int8))


# bank_a: ten applicants; bank_b: five. Scores are PDs (higher = riskier).
A_IDS = [f"a{i}" for i in range(10)]
A_REGION = ["urban"] * 5 + ["rural"] * 5
A_Y = np.array([0, 0, 0, 1, 0, 0, 0, 1, 1, 0])
A_P = np.array([0.05, 0.10, 0.20, 0.90, 0.30, 0.15, 0.40, 0.95, 0.50, 0.60])
B_IDS = ["b0", "b1", "b2", "b3", "b4"]
B_REGION = ["urban", "rural", "rural", "urban", "rural"]
B_Y = np.array([0, 1, 0, 0, 0])
B_P = np.array([0.2, 0.1, 0.9, 0.3, 0.8])


@pytest.fixture
def setting() -> Setting:
    parties = {
        "bank_a": _bank("bank_a", A_IDS, A_REGION, range(10)),
        "bank_b": _bank("bank_b", B_IDS, B_REGION, range(5)),
    }
    splits = {
        "bank_a": {"test": np.array(A_IDS, dtype=object)},
        "bank_b": {"test": np.array(B_IDS, dtype=object)},
    }
    return Setting("horizontal", parties, ["bank_a", "bank_b"], splits)


def _outcome(method: str, pa: np.ndarray, pb: np.ndarray) -> MethodOutcome:
    # scored in a shuffled order: the audit must align groups by id, not by position
    order = np.array([3, 0, 9, 1, 5, 2, 8, 4, 7, 6])
    return MethodOutcome(
        method,
        {
            ("bank_a", "test"): ScoredSet(np.asarray(A_IDS, dtype=object)[order], A_Y[order], pa[order]),
            ("bank_b", "test"): ScoredSet(np.asarray(B_IDS, dtype=object), B_Y, pb),
        },
    )


def test_approve_safest_takes_the_lowest_scores():
    assert approve_safest(np.array([0.3, 0.1, 0.2, 0.9]), 0.5).tolist() == [False, True, True, False]
    assert approve_safest(np.array([0.5]), 0.1).tolist() == [True]  # at least one approved


def test_group_metrics_equal_hand_computed(setting):
    config = validate({"evaluation": {"approval_rate": 0.8}})
    outcomes = {"siloed": _outcome("siloed", A_P, B_P)}
    out = fairness_audit(
        config, setting, outcomes, FairnessConfig(enabled=True, groups=["region_type"], min_group_size=1)
    )
    # By hand. bank_a approves its 8 safest: all but a3 (0.90) and a7 (0.95).
    #   urban a0..a4: approved a0 a1 a2 a4 (4 of 5); rural a5..a9: approved a5 a6 a8 a9 (4 of 5).
    # bank_b approves round(0.8 * 5) = 4: all but b2 (0.9).
    #   urban b0 b3: both approved; rural b1 b2 b4: b1 b4 approved.
    # urban: 7 applicants, 6 approved; rural: 8 applicants, 6 approved.
    groups = out["groups"]["region_type"]["siloed"]["by_group"]
    assert groups["urban"]["n"] == 7 and groups["rural"]["n"] == 8
    assert groups["urban"]["approval_rate"] == pytest.approx(6 / 7)
    assert groups["rural"]["approval_rate"] == pytest.approx(6 / 8)
    # bad rate among the approved: urban approved a0 a1 a2 a4 b0 b3 -> no default; rural a5 a6 a8 a9 b1 b4 ->
    # a8 and b1 defaulted: 2 / 6
    assert groups["urban"]["bad_rate"] == pytest.approx(0.0)
    assert groups["rural"]["bad_rate"] == pytest.approx(2 / 6)
    # approval among non-defaulters: urban goods a0 a1 a2 a4 b0 b3 all approved (6/6); rural goods
    # a5 a6 a9 b2 b4 -> a5 a6 a9 b4 approved (4/5)
    assert groups["urban"]["approval_rate_good"] == pytest.approx(1.0)
    assert groups["rural"]["approval_rate_good"] == pytest.approx(4 / 5)
    assert groups["urban"]["default_rate"] == pytest.approx(1 / 7)
    assert groups["rural"]["share"] == pytest.approx(8 / 15)
    block = out["groups"]["region_type"]["siloed"]
    assert block["demographic_parity_difference"] == pytest.approx(6 / 7 - 6 / 8)
    assert block["equal_opportunity_difference"] == pytest.approx(1.0 - 4 / 5)
    # KS by hand, urban: y = a0..a4 (0,0,0,1,0) + b0 b3 (0,0); scores 0.05 .1 .2 .9 .3 .2 .3: the one
    # default scores highest -> KS = 1
    assert groups["urban"]["ks"] == pytest.approx(1.0)
    json.dumps(out)


def test_group_metrics_match_pandas_on_random_data():
    rng = np.random.default_rng(0)
    n = 2000
    y = (rng.random(n) < 0.1).astype(int)
    p = np.clip(0.1 + 0.2 * y + rng.normal(0, 0.1, n), 0, 1)
    groups = pd.Series(rng.choice(["a", "b", "c", "tiny"], p=[0.5, 0.3, 0.19, 0.01], size=n))
    approved = approve_safest(p, 0.7)
    result = group_metrics(y, p, approved, groups, min_group_size=50)
    frame = pd.DataFrame({"y": y, "a": approved, "g": groups})
    expected_rate = frame.groupby("g")["a"].mean()
    expected_good = frame[frame.y == 0].groupby("g")["a"].mean()
    for g in ("a", "b", "c", "tiny"):
        assert result["by_group"][g]["approval_rate"] == pytest.approx(expected_rate[g])
        assert result["by_group"][g]["approval_rate_good"] == pytest.approx(expected_good[g])
    assert "tiny" not in result["groups_compared"]  # 1% of 2000 = ~20 applicants < 50
    big = ["a", "b", "c"]
    assert result["demographic_parity_difference"] == pytest.approx(
        expected_rate[big].max() - expected_rate[big].min()
    )
    assert result["equal_opportunity_difference"] == pytest.approx(
        expected_good[big].max() - expected_good[big].min()
    )


def test_federation_narrowing_or_widening_the_rural_gap_is_reported(setting):
    config = validate({"evaluation": {"approval_rate": 0.8}})
    # a model that rejects bank_a's rural a7 and a9 (a3 now looks safe): every urban applicant approved,
    # rural 5 of 8 -> gap 5/8 - 7/7
    skewed_a = A_P.copy()
    skewed_a[3] = 0.25
    skewed, fair = _outcome("x", skewed_a, B_P), _outcome("x", A_P, B_P)
    cfg = FairnessConfig(enabled=True, min_group_size=1)
    gap = fairness_audit(config, setting, {"siloed": skewed, "federated": fair}, cfg)["gap"]
    assert gap["approval_gap"]["siloed"] == pytest.approx(5 / 8 - 1.0)
    assert gap["approval_gap"]["federated"] == pytest.approx(6 / 8 - 6 / 7)
    assert gap["approval_gap_good"]["siloed"] == pytest.approx(3 / 5 - 1.0)  # rural goods a5 a6 a9 b2 b4
    assert gap["federated_vs_siloed"] == "narrows"
    assert gap["federated_minus_siloed_abs"] == pytest.approx(abs(6 / 8 - 6 / 7) - abs(5 / 8 - 1.0))
    gap = fairness_audit(config, setting, {"siloed": fair, "federated": skewed}, cfg)["gap"]
    assert gap["federated_vs_siloed"] == "widens"


def test_missing_and_numeric_group_columns(setting):
    config = validate({})
    outcomes = {"siloed": _outcome("siloed", A_P, B_P)}
    cfg = FairnessConfig(enabled=True, groups=["region_type", "sector", "firm_age"], min_group_size=1)
    out = fairness_audit(config, setting, outcomes, cfg)
    assert out["missing_groups"] == ["sector"]
    bins = out["groups"]["firm_age"]["siloed"]["by_group"]
    assert 2 <= len(bins) <= 5 and sum(b["n"] for b in bins.values()) == 15


def test_disabled_and_config_checks(setting):
    assert fairness_audit(validate({}), setting, {}, FairnessConfig()) == {"enabled": False}
    with pytest.raises(ValueError, match="gap_group"):
        FairnessConfig(groups=["sector"])
    with pytest.raises(ValueError, match="Extra inputs"):
        FairnessConfig.model_validate({"enabled": True, "group": ["sector"]})
