"""The results directory: every finished unit written atomically, the summary only when all are done.

Layout (see the contract)::

    DIR/run.json                       config, fingerprint, start time (written first)
    DIR/units/<point>/seed=<s>/<method>.npz + .json   one finished (point, seed, method), atomically
    DIR/metrics.csv                    one row per point x seed x method x party x test split
    DIR/history.csv                    per-round / per-epoch training history
    DIR/results.json                   the contract's summary; "complete": true only when everything finished
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fedrisk._json import json_default
from fedrisk.outcome import MethodOutcome, ScoredSet


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=2, default=json_default).encode("utf-8"))


def fingerprint(config_dump: dict) -> str:
    """Stable hash of a resolved config: a resumed run must be the same experiment."""
    text = json.dumps(config_dump, sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def unit_dir(root: Path, point: str, seed: int) -> Path:
    return root / "units" / point / f"seed={seed}"


def save_outcome(directory: Path, outcome: MethodOutcome) -> None:
    """Persist one method's outcome; the JSON is renamed into place last and marks the unit finished."""
    arrays: dict[str, np.ndarray] = {}
    index = {}
    for key, scored in outcome.scores.items():
        slot = f"s{len(index)}"
        index[key] = {"slot": slot, "segments": sorted(scored.segments)}
        arrays[f"{slot}_ids"] = np.asarray(scored.ids).astype(str)
        arrays[f"{slot}_y"] = np.asarray(scored.y, dtype=np.int8)
        arrays[f"{slot}_p"] = np.asarray(scored.p, dtype=np.float64)
        for name, mask in scored.segments.items():
            arrays[f"{slot}_seg_{name}"] = np.asarray(mask, dtype=bool)
    if outcome.train_scores is not None:
        arrays["train_scores"] = np.asarray(outcome.train_scores, dtype=np.float64)
    buffer = _npz_bytes(arrays)
    atomic_write_bytes(directory / f"{outcome.method}.npz", buffer)
    meta = {
        "method": outcome.method,
        "scores": index,
        "history": outcome.history,
        "cost": outcome.cost,
        "extra": outcome.extra,
    }
    atomic_write_json(directory / f"{outcome.method}.json", meta)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def finished_methods(directory: Path) -> set[str]:
    if not directory.exists():
        return set()
    return {p.stem for p in directory.glob("*.json") if (directory / f"{p.stem}.npz").exists()}


def load_outcome(directory: Path, method: str) -> MethodOutcome:
    meta = json.loads((directory / f"{method}.json").read_text())
    with np.load(directory / f"{method}.npz", allow_pickle=False) as data:
        scores = {}
        for key, info in meta["scores"].items():
            slot = info["slot"]
            segments = {name: data[f"{slot}_seg_{name}"] for name in info["segments"]}
            scores[key] = ScoredSet(data[f"{slot}_ids"], data[f"{slot}_y"], data[f"{slot}_p"], segments)
        train_scores = data["train_scores"] if "train_scores" in data.files else None
    return MethodOutcome(
        method=meta["method"],
        scores=scores,
        history=meta["history"],
        cost=meta["cost"],
        train_scores=train_scores,
        extra=meta.get("extra", {}),
    )
