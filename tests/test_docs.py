"""The committed config reference matches the pydantic models (regenerate it when a field changes)."""

from pathlib import Path

from fedrisk.config.reference import render

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_current():
    committed = (ROOT / "docs" / "config_reference.md").read_text()
    assert committed == render(), "run: python -m fedrisk.config.reference > docs/config_reference.md"


def test_default_experiment_config_is_valid():
    from fedrisk.config.experiment import load_config

    cfg, _ = load_config(ROOT / "experiments" / "configs" / "vertical_ks_uplift.toml")
    assert cfg.topology == "vertical" and len(cfg.seeds) >= 5
