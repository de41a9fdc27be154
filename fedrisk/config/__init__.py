"""The experiment config: pydantic schema only (no torch, no Flower), validated once at the edge."""

from fedrisk.config.experiment import (
    ExperimentConfig,
    load_config,
    parse_override,
    point_label,
    read_toml,
    set_dotted,
    sweep_points,
    validate,
)

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
