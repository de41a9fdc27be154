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
def test_smallest_bank_uplift_ci_is_above_zero(tmp_path):
    """Each seed is a new world whose smallest bank is a different, independent draw; the interval is a
    t-interval over those seeds. (Measured: a two-level bootstrap that also resamples a 112-applicant test
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
    mean, sem = np.mean(gains), stats.sem(gains)
    low = mean - stats.t.ppf(0.975, len(gains) - 1) * sem
    assert low > 0, f"smallest-bank KS uplift per seed {np.round(gains, 3)}; 95% CI lower end {low:.3f}"
