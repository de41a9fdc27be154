"""One PSI per run: the intersection depends only on the tables, so every seed of a run reuses it.

On real tables every seed used to run the same private set intersection again (5 seeds: 626 s instead of
~200 s). `cached_alignment` runs PSI once per (label holder's ids, partner's ids, fpr), over the label
holder's whole table, and keeps the intersection and its transcript in a cache directory (the runner uses
``<results>/work/psi``); a seed's alignment is then its own applicants found in that intersection, in
the order every alignment uses (`shuffled_roster`) — the same result as running PSI on those applicants
(a test checks), at the cost of one run. Concurrent workers take turns through a file lock, so the second
waits and reads instead of computing again. The cached transcript is reported as each seed's alignment
cost: what the protocol costs, whether it ran now or earlier in the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from fedrisk.core.jsonio import atomic_write_bytes
from fedrisk.protocol.psi import Alignment, PsiTranscript, align_parties
from fedrisk.protocol.rosters import shuffled_roster

__all__ = ["cached_alignment", "plan_order"]


def plan_order(splits: Mapping[str, np.ndarray]) -> np.ndarray:
    """The label holder's applicants in the order the vertical driver lists them: train, val, the rest."""
    order = ["train", "val", *[s for s in splits if s not in ("train", "val")]]
    return np.concatenate([np.asarray(splits[s]) for s in order if s in splits]).astype(str)


def cached_alignment(
    cache_dir: Path,
    label_holder: str,
    label_ids: Sequence[str],
    applicants: np.ndarray,
    partners: Mapping[str, Sequence[str]],
    *,
    seed: int,
    parallel: bool = True,
    fpr: float | None = None,
) -> Alignment:
    """The alignment of ``applicants`` with every partner, from PSI over ``label_ids`` run at most once.

    Parameters
    ----------
    cache_dir : Path
        Where intersections are kept (created if missing).
    label_holder : str
        The PSI client.
    label_ids : sequence of str
        Every id in the label holder's table (a superset of ``applicants``).
    applicants : np.ndarray
        This seed's applicants, in the driver's order (`plan_order`).
    partners : mapping of str to sequence of str
        Partner -> its ids.
    seed, parallel, fpr
        As for `align_parties` (``seed`` only shuffles each partner's list).

    Returns
    -------
    Alignment
        ``seconds`` is the PSI time of the cached runs (their transcripts' sum).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    keys = {name: _key(label_holder, label_ids, name, ids, fpr) for name, ids in partners.items()}
    with _locked(cache_dir / ".lock"):
        found = {name: _load(cache_dir / f"{key}.npz") for name, key in keys.items()}
        missing = {name: partners[name] for name, hit in found.items() if hit is None}
        if missing:
            fresh = align_parties(
                label_holder, np.asarray(label_ids).astype(str), missing, parallel=parallel, fpr=fpr
            )
            for name, transcript in zip(missing, fresh.transcripts, strict=True):
                found[name] = (np.sort(fresh.shared_ids[name]), transcript)
                _save(cache_dir / f"{keys[name]}.npz", *found[name])
    applicants = np.asarray(applicants).astype(str)
    shared = {}
    for name in partners:
        shared[name] = shuffled_roster(applicants[np.isin(applicants, found[name][0])], name, seed)
    transcripts = [found[name][1] for name in partners]
    return Alignment(label_holder, shared, transcripts, seconds=sum(t.seconds for t in transcripts))


def _key(holder: str, holder_ids: Sequence[str], partner: str, partner_ids: Sequence[str], fpr) -> str:
    digest = hashlib.sha256(json.dumps([holder, partner, fpr]).encode())
    for ids in (holder_ids, partner_ids):
        digest.update(b"\1" + "\0".join(map(str, ids)).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:24]


def _load(path: Path) -> tuple[np.ndarray, PsiTranscript] | None:
    """A cached intersection, or None (missing or damaged: it is computed again)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["ids"], PsiTranscript(**json.loads(str(data["transcript"])))
    except Exception:  # a damaged cache entry is only a cache miss
        return None


def _save(path: Path, ids: np.ndarray, transcript: PsiTranscript) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, ids=ids.astype(str), transcript=np.array(json.dumps(dataclasses.asdict(transcript))))
    atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (POSIX ``flock``; without it, a second worker may compute too)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
