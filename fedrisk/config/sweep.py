"""Sweep points: the grid of `[sweep]` values, each as a validated config, and its run-folder name."""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

from fedrisk.config.experiment import ExperimentConfig, set_dotted


def sweep_points(config: ExperimentConfig, raw: dict) -> list[tuple[dict[str, Any], ExperimentConfig]]:
    """Every grid point as (its assignments, the config with them applied); one point when no sweep."""
    if not config.sweep:
        return [({}, config)]
    keys = list(config.sweep)
    points = []
    for values in itertools.product(*(config.sweep[k] for k in keys)):
        data = copy.deepcopy(raw)
        data.pop("sweep", None)
        assignment = dict(zip(keys, values, strict=True))
        for key, value in assignment.items():
            set_dotted(data, key, value)
        point = ExperimentConfig.model_validate(data)
        for party, resolved in zip(point.data.parties, config.data.parties, strict=True):
            party.path = resolved.path
        points.append((assignment, point))
    return points


def point_label(assignment: dict[str, Any]) -> str:
    """A short, filesystem-safe name for a sweep point (``"base"`` when nothing is swept)."""
    if not assignment:
        return "base"

    def text(value: Any) -> str:
        return "+".join(map(str, value)) if isinstance(value, list) else str(value)

    parts = [f"{k.split('.')[-1]}={text(v)}" for k, v in assignment.items()]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "__".join(parts))
