"""Generate the config reference (Markdown) from the pydantic models, so the docs cannot drift.

`python -m fedrisk.config.reference > docs/config_reference.md`; a test checks the file is current.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from fedrisk.config.experiment import ExperimentConfig


def _default(info) -> str:
    if info.default_factory is not None:
        try:
            value = info.default_factory()
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section)"
        return json.dumps(value, default=str)
    if info.default is PydanticUndefined:
        return "(required)"
    return json.dumps(info.default, default=str)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _walk(
    model: type[BaseModel], prefix: str, lines: list[str], sections: list[tuple[str, type[BaseModel]]]
) -> None:
    rows = []
    for name, info in model.model_fields.items():
        sub = _section_type(info.annotation)
        key = f"{prefix}{name}"
        if sub is not None:
            sections.append((key, sub))
            continue
        description = (info.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{key}` | `{_default(info)}` | {description} |")
    if rows:
        title = prefix.rstrip(".") or "(top level)"
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        lines += [
            f"### `[{title}]`" if prefix else "### top level",
            "",
            doc,
            "",
            "| key | default | meaning |",
            "|---|---|---|",
        ]
        lines += rows + [""]


def render() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from the pydantic models by `python -m fedrisk.config.reference`; do not edit by hand.",
        "Every key is optional. Override any of them on the command line with `--set KEY=VALUE`.",
        "",
    ]
    queue: list[tuple[str, type[BaseModel]]] = [("", ExperimentConfig)]
    while queue:
        prefix, model = queue.pop(0)
        found: list[tuple[str, type[BaseModel]]] = []
        _walk(model, f"{prefix}." if prefix else "", lines, found)
        queue = found + queue
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
