"""`fedrisk generate`: write each holder's synthetic table as its own file, plus a manifest.

The files have the shape the real-table loader reads (`[data] source = "tables"`), so a generated world
can be fed back in, edited, or handed to another tool.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedrisk import __version__
from fedrisk.config.experiment import ExperimentConfig
from fedrisk.core.errors import FedriskError
from fedrisk.core.jsonio import atomic_write_bytes, atomic_write_json

ID_COLUMN = "firm_id"
LABEL_COLUMN = "default_12m"


def party_frame(table) -> pd.DataFrame:
    frame = pd.DataFrame({ID_COLUMN: table.ids.astype(str)})
    frame = pd.concat([frame, table.features.reset_index(drop=True)], axis=1)
    if table.label is not None:
        frame[LABEL_COLUMN] = table.label.astype(int)
    if table.cohort is not None and table.cohort.any():
        frame["application_cohort"] = table.cohort.astype(int)
    return frame


def write_world(config: ExperimentConfig, out: Path, seed: int, file_format: str, force: bool) -> dict:
    from fedrisk.data.synthetic import generate_world

    manifest_path = out / "manifest.json"
    if manifest_path.exists() and not force:
        raise FedriskError(
            "--out", f"{out} already holds a generated world", "choose another --out or pass --force"
        )
    world = generate_world(config.world, seed)
    out.mkdir(parents=True, exist_ok=True)
    parties = []
    for name, table in world.parties.items():
        frame = party_frame(table)
        path = out / f"{name}.{file_format}"
        if file_format == "csv":
            atomic_write_bytes(path, frame.to_csv(index=False).encode())
        else:
            tmp = out / f".{name}.parquet.tmp"
            frame.to_parquet(tmp, index=False)
            tmp.replace(path)
        parties.append(
            {
                "name": name,
                "path": path.name,
                "rows": int(table.n_rows),
                "id": ID_COLUMN,
                "label": LABEL_COLUMN if table.label is not None else None,
                "features": list(map(str, table.features.columns)),
                "default_rate": float(table.label.mean()) if table.label is not None else None,
            }
        )
    manifest = {
        "fedrisk_version": __version__,
        "seed": seed,
        "world": config.world.model_dump(mode="json"),
        "parties": parties,
        "data_config_example": "\n".join(
            ["[data]", 'source = "tables"']
            + [
                f'[[data.parties]]\nname = "{p["name"]}"\npath = "{p["path"]}"\nid = "{ID_COLUMN}"'
                + (f'\nlabel = "{LABEL_COLUMN}"' if p["label"] else "")
                for p in parties
            ]
        ),
    }
    atomic_write_json(manifest_path, manifest)
    return manifest
