"""The results directory: every finished unit written atomically, the summary only when all are done.

Layout (see the contract)::

    DIR/run.json                       config, fingerprint, start time (written first)
    DIR/units/<point>/seed=<s>/<method>.npz + .json   one finished (point, seed, method), atomically
    DIR/units/<point>/seed=<s>/audit_<name>.json      one finished audit
    DIR/units/<point>/seed=<s>/data.json              rows per holder and each partner's match rate
    DIR/metrics.csv                    one row per point x seed x method x party x test split
    DIR/history.csv                    per-round / per-epoch training history
    DIR/results.json                   the contract's summary; "complete": true only when everything finished

Each unit file records the fingerprint of what it was computed from (the point's config, the seed and the
input tables' bytes); `discard_bad_units` removes, with a warning naming it, any file that is damaged or was
computed from something else (e.g. copied from another seed), so the runner recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedrisk.config import ExperimentConfig
from fedrisk.core.jsonio import atomic_write_bytes, atomic_write_json, fingerprint
from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey

AUDIT_PREFIX = "audit_"
DATA_FILE = "data.json"


@dataclass
class Unit:
    """One finished (sweep point, seed): every method's outcome."""

    point: str
    assignment: dict
    seed: int
    outcomes: dict[str, MethodOutcome]


def unit_dir(root: Path, point: str, seed: int) -> Path:
    return root / "units" / point / f"seed={seed}"


# ---------------------------------------------------------------------------------------------------------
# Fingerprints


def inputs_fingerprint(config: ExperimentConfig) -> str:
    """What a unit depends on besides its config and seed: the bytes of every real table (a synthetic
    world is a function of the config and the seed)."""
    if config.data.source != "tables":
        return "synthetic"
    digest = hashlib.sha256()
    for party in sorted(config.data.parties, key=lambda p: p.name):
        digest.update(party.name.encode() + b"\0")
        with open(party.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def unit_fingerprint(config: ExperimentConfig, seed: int, inputs: str) -> str:
    """The fingerprint every file of unit (``config``'s point, ``seed``) records."""
    return fingerprint({"config": config.model_dump(mode="json"), "seed": int(seed), "inputs": inputs})


# ---------------------------------------------------------------------------------------------------------
# Writing and reading


def save_outcome(
    directory: Path, outcome: MethodOutcome, fingerprint: str | None = None, seed: int | None = None
) -> None:
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
        "fingerprint": fingerprint,
        "seed": seed,
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
    return {
        p.stem
        for p in directory.glob("*.json")
        if not _is_record(p.name) and (directory / f"{p.stem}.npz").exists()
    }


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


def save_record(path: Path, payload: dict, fingerprint: str, seed: int) -> None:
    """A unit's JSON record (an audit's result, the data summary) with the unit's fingerprint."""
    atomic_write_json(path, {"fingerprint": fingerprint, "seed": int(seed), "result": payload})


def load_record(path: Path) -> dict:
    return json.loads(path.read_text())["result"]


def _is_record(name: str) -> bool:
    return name == DATA_FILE or name.startswith(AUDIT_PREFIX)


# ---------------------------------------------------------------------------------------------------------
# Checking what a resumed run finds


def discard_bad_units(directory: Path, expected: str, seed: int) -> list[str]:
    """Remove the unit files in ``directory`` that are damaged or were computed from another config, seed
    or tables; returns one message per file removed (the runner recomputes them)."""
    if not directory.exists():
        return []
    messages = []
    for path in sorted(directory.glob("*.json")):
        problem = _problem(path, expected, seed)
        if problem is None:
            continue
        path.unlink(missing_ok=True)
        if not _is_record(path.name):
            (directory / f"{path.stem}.npz").unlink(missing_ok=True)
        messages.append(f"{path}: {problem}; recomputing it")
    for stale in directory.glob(".*.tmp"):  # a write cut short by a kill (never renamed into place)
        stale.unlink(missing_ok=True)
    return messages


def _problem(path: Path, expected: str, seed: int) -> str | None:
    """What is wrong with one unit file, or None."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not text.strip():
        return "empty file"
    try:
        meta = json.loads(text)
    except ValueError:
        return "not valid JSON (cut short?)"
    if not isinstance(meta, dict) or "fingerprint" not in meta:
        return "not a unit file of this fedrisk version"
    if meta.get("seed") is not None and meta["seed"] != seed:
        return f"holds the result of seed {meta['seed']}, not seed {seed}"
    if meta["fingerprint"] != expected:
        return "was computed from a different config or different input tables"
    if _is_record(path.name):
        return None if "result" in meta else "has no result"
    return _npz_problem(path.with_suffix(".npz"), meta)


def _npz_problem(path: Path, meta: dict) -> str | None:
    if not path.exists():
        return f"its arrays ({path.name}) are missing"
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:  # CRC of every member
                return f"{path.name} is damaged"
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return f"{path.name} is damaged"
    scores = meta.get("scores")
    if not isinstance(scores, list):
        return "lists no scores"
    slots = [info.get("slot") for info in scores]
    if any(f"{slot}_{part}.npy" not in names for slot in slots for part in ("ids", "y", "p")):
        return f"{path.name} lacks arrays its JSON lists"
    return None
