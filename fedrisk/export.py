"""`fedrisk generate`: write each holder's synthetic table as its own file, a manifest, and data.toml.

The files have the shape the real-table loader reads (`[data] source = "tables"`), so a generated world
can be fed back in, edited, or handed to another tool.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import tomli_w

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
    data = data_block(parties)
    manifest = {
        "fedrisk_version": __version__,
        "seed": seed,
        "world": config.world.model_dump(mode="json"),
        "parties": parties,
        "data": data,
    }
    atomic_write_bytes(out / DATA_TOML, (DATA_TOML_HEADER + tomli_w.dumps({"data": data})).encode())
    atomic_write_json(manifest_path, manifest)
    return manifest


DATA_TOML = "data.toml"
DATA_TOML_HEADER = (
    "# The [data] block for these tables: paste it into an experiment config. Paths are relative to the\n"
    "# config file, so keep the config in this directory or make the paths absolute.\n"
)


def data_block(parties: list[dict]) -> dict:
    """The config's [data] section for the written tables (the shape `[data] source = "tables"` reads)."""
    entries = []
    for party in parties:
        entry = {"name": party["name"], "path": party["path"], "id": party["id"]}
        if party["label"]:
            entry["label"] = party["label"]
        entries.append(entry)
    return {"source": "tables", "parties": entries}
