"""Private set intersection split by role, for parties on different machines, with shards in parallel.

`fedrisk.protocol.psi.private_intersection` runs both sides of one PSI in one process. When each party
runs on its own node (Flower's deployment engine), each side must run where its ids live and only
serialized protocol messages may travel. This module is the same openmined-psi protocol (ECDH over
P-256; the client, i.e. the label holder, learns the intersection) cut at the message boundary:

1. client (label holder): ``key = new_client_key()``; ``requests = create_requests(key, ids, workers)``;
2. server (partner): ``setup, responses, fpr = serve(its_ids, requests, n_client, workers=...)``;
3. client: ``positions = intersect(key, setup, responses, workers)`` -> rows of its ids in the intersection.

Every step is an elliptic-curve operation per id (~75 us on this project's machine), so a million ids
cost minutes. The client's ids are cut into contiguous *shards*: one request per shard, answered and
intersected shard by shard in parallel processes with the same key (openmined-psi objects are rebuilt
from key bytes in each worker: they cannot be pickled). The server's setup (its whole set, one filter)
runs in parallel with its responses. The false-positive budget is for the whole query (all shards),
as in `fedrisk.protocol.psi.choose_fpr`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import private_set_intersection.python as psi

from fedrisk.protocol.psi import (
    _STRUCTURES,
    PsiTranscript,
    _mp_context,
    _n_cpus,
    _validated_ids,
    choose_fpr,
)

__all__ = [
    "SHARD_MIN_IDS",
    "PartyTimes",
    "create_requests",
    "default_workers",
    "intersect",
    "new_client_key",
    "parallel_intersection",
    "serve",
]

#: Fewer ids per shard than this are not worth a process (worker start-up ~0.5-2 s, ~75 us per id).
SHARD_MIN_IDS = 20_000


@dataclass
class PartyTimes:
    """Seconds one side spent in each step (for the cost table)."""

    request: float = 0.0
    setup: float = 0.0
    response: float = 0.0
    intersect: float = 0.0


def default_workers(n_ids: int, cpus: int | None = None) -> int:
    """Processes worth using for ``n_ids`` ids: one per `SHARD_MIN_IDS`, at most one per CPU."""
    cpus = _n_cpus() if cpus is None else cpus
    return max(1, min(cpus, n_ids // SHARD_MIN_IDS))


def new_client_key() -> bytes:
    """A fresh client (label holder) secret key, 32 bytes; it never leaves the client's node."""
    return psi.client.CreateWithNewKey(True).GetPrivateKeyBytes()


def _shards(n: int, parts: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, n, max(1, min(parts, n)) + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


# --- the work each process does (module-level: picklable) ----------------------------------------------


def _request(key: bytes, ids: list[str]) -> bytes:
    return psi.client.CreateFromKey(key, True).CreateRequest(ids).SerializeToString()


def _setup(key: bytes, fpr: float, n_client: int, ids: list[str], structure: str) -> bytes:
    server = psi.server.CreateFromKey(key, True)
    return server.CreateSetupMessage(fpr, n_client, ids, _STRUCTURES[structure]).SerializeToString()


def _response(key: bytes, request_bytes: bytes) -> bytes:
    request = psi.Request()
    request.ParseFromString(request_bytes)
    return psi.server.CreateFromKey(key, True).ProcessRequest(request).SerializeToString()


def _intersect(key: bytes, setup_bytes: bytes, response_bytes: bytes) -> np.ndarray:
    setup, response = psi.ServerSetup(), psi.Response()
    setup.ParseFromString(setup_bytes)
    response.ParseFromString(response_bytes)
    found = psi.client.CreateFromKey(key, True).GetIntersection(setup, response)
    return np.asarray(found, dtype=np.int64)


class _Pool:
    """Runs jobs in worker processes (or in this process when one worker suffices)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = (
            ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context()) if workers > 1 else None
        )

    def submit(self, fn: Callable, *args: object) -> Future:
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def __enter__(self) -> _Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


# --- the three steps ---------------------------------------------------------------------------------


def create_requests(key: bytes, ids: Sequence[str], workers: int = 1) -> list[bytes]:
    """The client's blinded ids, one serialized request per shard (contiguous, in ``ids`` order)."""
    values = list(ids)
    shards = _shards(len(values), workers)
    with _Pool(min(workers, len(shards))) as pool:
        futures = [pool.submit(_request, key, values[a:b]) for a, b in shards]
        return [f.result() for f in futures]


def serve(
    ids: Sequence[str],
    requests: Sequence[bytes],
    n_client: int,
    *,
    fpr: float | None = None,
    workers: int = 1,
    key: bytes | None = None,
) -> tuple[bytes, list[bytes], float, str]:
    """The server's side: its setup message (its whole set) and one response per request shard.

    Returns ``(setup, responses, fpr, structure)``; the key is fresh unless given (tests) and discarded.
    """
    values = list(ids)
    chosen, structure = choose_fpr(n_client, len(values), fpr)
    key = key if key is not None else psi.server.CreateWithNewKey(True).GetPrivateKeyBytes()
    with _Pool(min(workers, 1 + len(requests))) as pool:
        setup = pool.submit(_setup, key, chosen, n_client, values, structure)
        responses = [pool.submit(_response, key, r) for r in requests]
        return setup.result(), [r.result() for r in responses], chosen, structure


def intersect(
    key: bytes, setup: bytes, responses: Sequence[bytes], shard_sizes: Sequence[int], workers: int = 1
) -> np.ndarray:
    """Positions (sorted, into the client's ids) of the ids the server also holds."""
    if len(responses) != len(shard_sizes):
        raise ValueError(f"{len(responses)} responses for {len(shard_sizes)} shards")
    offsets = np.concatenate([[0], np.cumsum(shard_sizes)[:-1]]).astype(np.int64)
    with _Pool(min(workers, len(responses))) as pool:
        futures = [pool.submit(_intersect, key, setup, r) for r in responses]
        found = [f.result() + off for f, off in zip(futures, offsets, strict=True)]
    return np.sort(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)


def shard_sizes(n: int, workers: int) -> list[int]:
    """Sizes of the shards `create_requests` cuts ``n`` ids into."""
    return [b - a for a, b in _shards(n, workers)]


# --- both sides in one call (benchmarks, and the reference the split protocol must equal) -------------


def parallel_intersection(
    client_name: str,
    client_ids: Sequence[str],
    server_name: str,
    server_ids: Sequence[str],
    *,
    fpr: float | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, PsiTranscript, PartyTimes]:
    """`fedrisk.protocol.psi.private_intersection` with every step sharded over ``workers`` processes.

    The client's requests and the server's setup run at the same time (they do not depend on each other),
    then the responses, then the intersection, each over shards. Returns the client's ids in the
    intersection (client order), the transcript, and the seconds of each step.
    """
    client_list = _validated_ids(client_name, client_ids)
    server_list = _validated_ids(server_name, server_ids)
    n_client = len(client_list)
    workers = default_workers(n_client) if workers is None else max(1, workers)
    chosen, structure = choose_fpr(n_client, len(server_list), fpr)
    times = PartyTimes()
    started = time.perf_counter()
    client_key = new_client_key()
    server_key = psi.server.CreateWithNewKey(True).GetPrivateKeyBytes()
    shards = _shards(n_client, workers)
    with _Pool(workers) as pool:
        setup_f = pool.submit(_setup, server_key, chosen, n_client, server_list, structure)
        request_f = [pool.submit(_request, client_key, client_list[a:b]) for a, b in shards]
        requests = [f.result() for f in request_f]
        times.request = time.perf_counter() - started
        response_f = [pool.submit(_response, server_key, r) for r in requests]
        setup = setup_f.result()
        times.setup = time.perf_counter() - started
        responses = [f.result() for f in response_f]
        times.response = time.perf_counter() - started - times.request
        mark = time.perf_counter()
        offsets = [a for a, _ in shards]
        found_f = [pool.submit(_intersect, client_key, setup, r) for r in responses]
        positions = np.sort(
            np.concatenate([f.result() + off for f, off in zip(found_f, offsets, strict=True)])
        )
        times.intersect = time.perf_counter() - mark
    seconds = time.perf_counter() - started
    source = client_ids if isinstance(client_ids, np.ndarray) else np.asarray(client_list)
    transcript = PsiTranscript(
        client=client_name,
        server=server_name,
        bytes_client_to_server=sum(len(r) for r in requests),
        bytes_server_to_client=len(setup) + sum(len(r) for r in responses),
        seconds=seconds,
        fpr=chosen,
        n_client=n_client,
        n_server=len(server_list),
    )
    return source[positions], transcript, times
