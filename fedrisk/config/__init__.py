"""The experiment config: pydantic schema only (no torch, no Flower), validated once at the edge."""

from fedrisk.config.experiment import (
    ExperimentConfig,
    load_config,
    parse_override,
    read_toml,
    set_dotted,
    validate,
)
from fedrisk.config.sweep import point_label, sweep_points

__all__ = [
    "ExperimentConfig",
    "load_config",
    "parse_override",
    "point_label",
    "read_toml",
    "set_dotted",
    "sweep_points",
    "validate",
]
