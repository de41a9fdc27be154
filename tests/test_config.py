"""Config validation: defaults, overrides, sweeps, and one clear error per bad input."""

from pathlib import Path

import pytest

from fedrisk.config.experiment import ExperimentConfig, load_config, parse_override
from fedrisk.config.sweep import point_label, sweep_points
from fedrisk.core.errors import FedriskError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_empty_config_gives_the_default_vertical_experiment(tmp_path):
    cfg, _ = load_config(write(tmp_path, ""))
    assert cfg == ExperimentConfig()
    assert len(cfg.seeds) >= 5 and cfg.data.source == "synthetic"


def test_set_overrides_nested_keys_with_toml_values(tmp_path):
    cfg, _ = load_config(
        write(tmp_path, "[world]\nn_firms = 5000\n"), ["world.n_firms=20000", "model.kind=mlp"]
    )
    assert cfg.world.n_firms == 20000 and cfg.model.kind == "mlp"
    assert parse_override("seeds=[1, 2]") == ("seeds", [1, 2])


@pytest.mark.parametrize(
    ("text", "overrides", "field"),
    [
        ("[world]\nn_firm = 10\n", [], "world.n_firm"),
        ("[world]\ndefault_rate = 1.5\n", [], "world.default_rate"),
        ("[world]\nn_firms = 0\n", [], "world.n_firms"),
        ("[training]\nepochs = 'many'\n", [], "training.epochs"),
        ("", ["model.kind=forest"], "model.kind"),
        ("", ["nonsense"], "--set"),
        ("[data]\nsource = 'tables'\n", [], "data"),
        ("seeds = [1, 1]\n", [], "seeds"),
    ],
)
def test_bad_config_names_the_field(tmp_path, text, overrides, field):
    with pytest.raises(FedriskError) as info:
        load_config(write(tmp_path, text), overrides)
    assert str(info.value).startswith(field)


def test_unknown_key_lists_valid_ones(tmp_path):
    with pytest.raises(FedriskError, match="use one of: .*n_firms"):
        load_config(write(tmp_path, "[world]\nn_firm = 10\n"))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FedriskError, match="file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(FedriskError, match="not valid TOML"):
        load_config(write(tmp_path, "[world\n"))


def test_sweep_expands_the_grid_and_validates_values(tmp_path):
    text = '[sweep]\n"model.kind" = ["logistic", "mlp"]\n"training.lr" = [0.01, 0.1, 0.2]\n'
    cfg, raw = load_config(write(tmp_path, text))
    points = sweep_points(cfg, raw)
    assert len(points) == 6
    assert {p.model.kind for _, p in points} == {"logistic", "mlp"}
    assert sorted({p.training.lr for _, p in points}) == [0.01, 0.1, 0.2]
    assert len({point_label(a) for a, _ in points}) == 6
    with pytest.raises(FedriskError, match="sweep.training.lr"):
        load_config(write(tmp_path, '[sweep]\n"training.lr" = [0.1, -1]\n'))
    with pytest.raises(FedriskError, match="sweep.training.lr"):
        load_config(write(tmp_path, '[sweep]\n"training.lr" = []\n'))
    with pytest.raises(FedriskError, match="sweep.world.n_firm"):
        load_config(write(tmp_path, '[sweep]\n"world.n_firm" = [10]\n'))
