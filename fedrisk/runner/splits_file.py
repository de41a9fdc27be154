"""``splits.parquet``: who was a training, validation, test or out-of-time applicant, per seed and party.

Each unit writes its own split (``units/<point>/seed=<s>/splits.parquet``, atomically, so parallel workers
never share a file); `collect_splits` stacks them into the results directory's ``splits.parquet``
(columns ``point, seed, party, id, split``), which a validator reads to check that no firm is a test
applicant at one bank and a training applicant at another (`fedrisk.data.splits.check_firm_splits`).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from fedrisk.core.jsonio import atomic_write_bytes
from fedrisk.data.setting import Setting

SPLITS_FILE = "splits.parquet"


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_unit_splits(directory: Path, setting: Setting, seed: int) -> None:
    """The unit's split (every label holder, every split) as ``<unit dir>/splits.parquet``."""
    atomic_write_bytes(Path(directory) / SPLITS_FILE, _parquet_bytes(setting.split_rows(seed)))


def collect_splits(root: Path) -> Path | None:
    """Stack every unit's split into ``<root>/splits.parquet``; None when no unit wrote one."""
    root = Path(root)
    frames = []
    for path in sorted((root / "units").glob(f"*/seed=*/{SPLITS_FILE}")):
        frame = pd.read_parquet(path)
        frames.append(frame.assign(point=path.parent.parent.name))
    if not frames:
        return None
    stacked = pd.concat(frames, ignore_index=True)
    stacked = stacked[["point", "seed", "party", "id", "split"]].astype(
        {"point": "category", "party": "category", "split": "category"}
    )
    target = root / SPLITS_FILE
    atomic_write_bytes(target, _parquet_bytes(stacked))
    return target
