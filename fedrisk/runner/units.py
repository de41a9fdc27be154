"""The results directory: every finished unit written atomically, the summary only when all are done.

Layout (see the contract)::

    DIR/run.json                       config, fingerprint, start time (written first)
    DIR/units/<point>/seed=<s>/<method>.npz + .json   one finished (point, seed, method), atomically
    DIR/metrics.csv                    one row per point x seed x method x party x test split
    DIR/history.csv                    per-round / per-epoch training history
    DIR/results.json                   the contract's summary; "complete": true only when everything finished
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedrisk.core.jsonio import atomic_write_bytes, atomic_write_json
from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey


@dataclass
class Unit:
    """One finished (sweep point, seed): every method's outcome."""

    point: str
    assignment: dict
    seed: int
    outcomes: dict[str, MethodOutcome]


def unit_dir(root: Path, point: str, seed: int) -> Path:
    return root / "units" / point / f"seed={seed}"


def save_outcome(directory: Path, outcome: MethodOutcome) -> None:
    """Persist one method's outcome; the JSON is renamed into place last and marks the unit finished."""
    arrays: dict[str, np.ndarray] = {}
    index = []
    for key, scored in outcome.scores.items():
        slot = f"s{len(index)}"
        index.append(
            {"party": key.party, "split": key.split, "slot": slot, "segments": sorted(scored.segments)}
        )
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
        for info in meta["scores"]:
            slot = info["slot"]
            segments = {name: data[f"{slot}_seg_{name}"] for name in info["segments"]}
            scores[ScoreKey(info["party"], info["split"])] = ScoredSet(
                data[f"{slot}_ids"], data[f"{slot}_y"], data[f"{slot}_p"], segments
            )
        train_scores = data["train_scores"] if "train_scores" in data.files else None
    return MethodOutcome(
        method=meta["method"],
        scores=scores,
        history=meta["history"],
        cost=meta["cost"],
        train_scores=train_scores,
        extra=meta.get("extra", {}),
    )
