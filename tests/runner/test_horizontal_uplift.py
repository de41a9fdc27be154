"""The horizontal default world, end to end through the runner: does the smallest bank gain?"""

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fedrisk.config import sweep_points
from fedrisk.config.experiment import load_config
from fedrisk.core.metrics import ks_statistic
from fedrisk.experiment import run_experiment
from fedrisk.runner.loop import load_units

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smallest_bank_gains_in_a_signed_rank_test(tmp_path):
    """Each seed is a new world whose smallest bank is a different, independent draw; the test is over
    those seeds. (Measured: a two-level bootstrap that also resamples a 112-applicant test
    set with 9 defaults counts that noise twice and spans zero at 5 seeds, [-0.04, 0.13], although the
    smallest bank gained in each of 8 seeds tried, by 0.03 to 0.11 KS.)"""
    cfg, raw = load_config(
        ROOT / "experiments" / "configs" / "horizontal_banks.toml", ["evaluation.n_bootstrap=20"]
    )
    methods = ("siloed", "federated")
    run_experiment(cfg, raw, tmp_path / "run", methods=methods)
    gains = []
    for unit in load_units(tmp_path / "run", sweep_points(cfg, raw), methods):
        sizes = {key: len(s.y) for key, s in unit.outcomes["siloed"].scores.items() if key.split == "test"}
        smallest = min(sizes, key=sizes.get)
        fed, silo = unit.outcomes["federated"].scores[smallest], unit.outcomes["siloed"].scores[smallest]
        assert np.array_equal(fed.ids, silo.ids)
        gains.append(ks_statistic(fed.y, fed.p) - ks_statistic(silo.y, silo.p))
    assert len(gains) == len(cfg.seeds) >= 5
    # one-sided Wilcoxon signed-rank test of "the smallest bank gains": the gains are skewed (a small test
    # set makes a few seeds' gains large: measured [0.073 0.391 0.056 0.277 0.017] after the split by firm),
    # which widens a t-interval past zero although every seed gained; at 5 seeds p < 0.05 needs all 5 > 0
    p_value = stats.wilcoxon(gains, alternative="greater").pvalue
    assert p_value < 0.05, (
        f"smallest-bank KS uplift per seed {np.round(gains, 3)}; signed-rank p = {p_value:.3f}"
    )
