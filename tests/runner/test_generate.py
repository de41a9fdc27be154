"""`fedrisk generate` writes one table per holder and a manifest that `[data] source = "tables"` can read back."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from fedrisk.config.experiment import load_config
from fedrisk.data.synthetic import WorldConfig, generate_world
from fedrisk.experiment import run_experiment

ROOT = Path(__file__).resolve().parents[2]


def test_generate_writes_each_holder_and_the_tables_run_back(tmp_path):
    out = tmp_path / "world"
    cmd = [
        sys.executable, "-m", "fedrisk", "generate", str(ROOT / "experiments" / "configs" / "vertical_ks_uplift.toml"),
        "--out", str(out), "--set", "world.n_firms=4000", "--seed", "3",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["name"] for p in manifest["parties"]] == ["bank", "tax", "supply_chain"]
    world = generate_world(WorldConfig(n_firms=4000), 3)
    for party in manifest["parties"]:
        frame = pd.read_parquet(out / party["path"])
        table = world.parties[party["name"]]
        assert len(frame) == party["rows"] == table.n_rows
        assert frame["firm_id"].tolist() == list(
            table.ids
        )  # the same world, byte for byte, as the seed gives
        assert ("default_12m" in frame) == (party["name"] == "bank")
    np.testing.assert_array_equal(
        pd.read_parquet(out / "bank.parquet")["default_12m"], world.parties["bank"].label
    )

    # data.toml is the manifest's [data] block as TOML; pasted into a config it runs on the written tables
    block = (out / "data.toml").read_text()
    assert tomllib.loads(block)["data"] == manifest["data"]
    assert [p["name"] for p in manifest["data"]["parties"]] == ["bank", "tax", "supply_chain"]
    config = out / "tables.toml"
    header = "seeds = [0]\n[evaluation]\nn_bootstrap = 20\n[runner]\nworkers = 1\n\n"
    config.write_text(header + block)
    cfg, raw = load_config(config)
    results = run_experiment(cfg, raw, tmp_path / "run", methods=("siloed",))
    assert results["complete"] and results["topology"] == "vertical"

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "--force" in again.stderr and "Traceback" not in again.stderr
