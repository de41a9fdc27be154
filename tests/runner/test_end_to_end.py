"""The main job end to end on a small world: `fedrisk run` through the CLI, federated included."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_CHECK = ROOT.parent / "shared" / "checks" / "contract_check.py"


@pytest.mark.slow
def test_cli_vertical_run_conforms_to_the_contract(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "fedrisk", "run", str(ROOT / "experiments" / "configs" / "vertical_ks_uplift.toml"),
        "--out", str(out), "--quiet",
        "--set", "world.n_firms=6000", "--set", "seeds=[0, 1]", "--set", "evaluation.n_bootstrap=100",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "uplift of federated over siloed" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True and results["topology"] == "vertical"
    # scikit-learn's pooled references are on by default: the check that centralized is an upper bound
    assert set(results["methods"]) == {
        "siloed",
        "centralized",
        "federated",
        "pooled_sklearn_lr",
        "pooled_hgb",
    }
    assert results["cost"]["bytes_sent"] > 0 and results["cost"]["epsilon"] is None
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics.query("split == 'test'")) == 2 * 5
    assert (out / "report.md").exists()
    if CONTRACT_CHECK.exists():
        check = subprocess.run(
            [sys.executable, str(CONTRACT_CHECK), str(out)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
    # a second run into the same finished directory is refused, and leaves it intact
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "--force" in again.stderr and "Traceback" not in again.stderr
    assert json.loads((out / "results.json").read_text())["complete"] is True
