"""Entity alignment by private set intersection (openmined-psi, ECDH over P-256).

Vertical federation needs the rows the label holder shares with each partner, without any holder
handing over its customer list. openmined-psi reveals the intersection to the *client* only (the
server learns the client's set size), so the label holder runs one PSI as client with every partner,
and each partner runs the server side. What each party learns is spelled out in ``docs/psi.md``.

PSI objects of openmined-psi can be neither pickled nor shared across threads, so each run creates its
own client and server and they exchange only serialized protobuf bytes; that is also what makes the
bytes on the wire countable. Partners are aligned in separate processes when that pays off.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import private_set_intersection.python as psi

from fedrisk.errors import FedriskError

__all__ = [
    "Alignment",
    "PsiTranscript",
    "align_parties",
    "choose_fpr",
    "partner_rows",
    "private_intersection",
]

#: Target false-positive probability for a whole PSI query (not per item).
DEFAULT_FPR = 1e-9
#: openmined-psi's GCS stores hashes in ``[0, max(n_client, n_server) * n_client / fpr)`` as int64;
#: past 2**63 (~9.223e18) the range wraps negative and the filter is garbage, so stay under this.
GCS_HASH_RANGE_LIMIT = 9.2e18
#: Beyond this the automatic fpr would no longer be "practically zero"; refuse rather than mislead.
MAX_AUTO_FPR = 1e-3
#: Below this many items (summed over pairs) process start-up (~0.5-0.8 s) outweighs the parallel gain;
#: measured with experiments/benchmarks/psi.py, see docs/psi.md.
PARALLEL_MIN_ITEMS = 20_000

_FIELD = "data.parties"
_SAME_ID_FIX = (
    "use the same firm identifier (e.g. the registration number) in the same format at every party"
)


@dataclass(frozen=True)
class PsiTranscript:
    """What crossed the wire in one PSI run, for the message log and the cost table.

    Attributes
    ----------
    client, server : str
        Party names (the client learns the intersection; the server learns ``n_client``).
    bytes_client_to_server : int
        Serialized request (the client's blinded ids).
    bytes_server_to_client : int
        Serialized setup message (the server's compressed set) plus the response.
    seconds : float
        Wall time of the run, all protocol steps.
    fpr : float
        False-positive probability used for the whole query.
    n_client, n_server : int
        Set sizes.
    """

    client: str
    server: str
    bytes_client_to_server: int
    bytes_server_to_client: int
    seconds: float
    fpr: float
    n_client: int
    n_server: int


@dataclass(frozen=True)
class Alignment:
    """Result of aligning the label holder with every partner.

    Attributes
    ----------
    label_holder : str
        The party that ran every PSI as client.
    shared_ids : dict[str, np.ndarray]
        Partner -> ids the label holder shares with it, shuffled with the seed so the order tells the
        partner nothing; this is the list the label holder sends the partner. With ``fpr > 0`` it may
        (rarely) hold an id the partner lacks: the partner drops it (see `partner_rows`).
    transcripts : list[PsiTranscript]
        One per partner, in the order the partners were given.
    seconds : float
        Wall time of the whole alignment (validation, process start-up, all PSI runs).
    """

    label_holder: str
    shared_ids: dict[str, np.ndarray]
    transcripts: list[PsiTranscript]
    seconds: float

    def coverage(self, partner: str, n_label_holder: int) -> float:
        """Fraction of the label holder's ``n_label_holder`` firms that ``partner`` also holds.

        Parameters
        ----------
        partner : str
            A partner name present in `shared_ids`.
        n_label_holder : int
            The label holder's number of firms (positive).

        Returns
        -------
        float
            ``len(shared_ids[partner]) / n_label_holder``.
        """
        if partner not in self.shared_ids:
            raise FedriskError(
                "partner", f"{partner!r} was not aligned", f"use one of {sorted(self.shared_ids)}"
            )
        if n_label_holder <= 0:
            raise FedriskError("n_label_holder", f"must be positive, got {n_label_holder}")
        return len(self.shared_ids[partner]) / n_label_holder


def choose_fpr(n_client: int, n_server: int, fpr: float | None = None) -> float:
    """False-positive probability for openmined-psi's GCS that cannot overflow its int64 hash range.

    Parameters
    ----------
    n_client, n_server : int
        Set sizes (positive).
    fpr : float or None
        Requested probability; None picks `DEFAULT_FPR`, raised just enough to stay under the bound.

    Returns
    -------
    float
        The fpr to pass to the library: ``max(n_client, n_server) * n_client / fpr`` stays below
        `GCS_HASH_RANGE_LIMIT`, computed exactly as the library does (in double precision).

    Raises
    ------
    FedriskError
        If a requested fpr is outside (0, 1) or too small for these set sizes, or if the sets are so
        large that the automatic fpr would exceed `MAX_AUTO_FPR`.
    """
    if n_client <= 0 or n_server <= 0:
        raise FedriskError("psi", f"set sizes must be positive, got {n_client} and {n_server}")
    m = max(n_client, n_server)
    minimum = m * n_client / GCS_HASH_RANGE_LIMIT
    if fpr is not None:
        if not 0.0 < fpr < 1.0:
            raise FedriskError("psi.fpr", f"must be in (0, 1), got {fpr}")
        if not _gcs_range_ok(m, n_client, fpr):
            raise FedriskError(
                "psi.fpr",
                f"{fpr:g} overflows the GCS hash range for {n_client:,} x {n_server:,} ids",
                f"use fpr >= {minimum * 1.01:.3g}, or leave it unset to choose automatically",
            )
        return float(fpr)
    chosen = max(DEFAULT_FPR, minimum)
    while not _gcs_range_ok(m, n_client, chosen):  # rounding at the boundary: step up by ulps
        chosen = math.nextafter(chosen, 1.0)
    if chosen > MAX_AUTO_FPR:
        raise FedriskError(
            _FIELD,
            f"{n_client:,} x {n_server:,} ids need a PSI false-positive rate of {chosen:.3g}",
            "align smaller sets (e.g. by region or sector blocks)",
        )
    return chosen


def _gcs_range_ok(m: int, n_client: int, fpr: float) -> bool:
    """Mirror of the library's ``max / (fpr / n_client)`` in doubles, so rounding cannot surprise us."""
    return float(m) / (fpr / float(n_client)) < GCS_HASH_RANGE_LIMIT


def _validated_ids(party: str, ids: Sequence[str]) -> list[str]:
    """Return ``ids`` as a list of str; reject what openmined-psi would silently mishandle."""
    values = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    if not values:
        raise FedriskError(_FIELD, f"{party!r} holds no firm ids", f"give {party!r} at least one row")
    bad = next((v for v in values if not isinstance(v, str)), None)
    if bad is not None:
        raise FedriskError(
            _FIELD,
            f"{party!r} has a non-string firm id {bad!r} ({type(bad).__name__})",
            "convert ids to strings before alignment",
        )
    if len(set(values)) != len(values):  # PSI would collapse duplicates without a word
        dups = [v for v, c in Counter(values).items() if c > 1]
        raise FedriskError(
            _FIELD,
            f"{party!r} has {len(dups):,} duplicated firm ids (e.g. {dups[:3]})",
            f"make {party!r}'s ids unique (one row per firm) before alignment",
        )
    return values


def private_intersection(
    client_name: str,
    client_ids: Sequence[str],
    server_name: str,
    server_ids: Sequence[str],
    *,
    fpr: float | None = None,
) -> tuple[np.ndarray, PsiTranscript]:
    """Run one ECDH PSI in which ``client_name`` learns the intersection and ``server_name`` does not.

    Parameters
    ----------
    client_name, server_name : str
        Party names, used in errors and the transcript.
    client_ids, server_ids : sequence of str
        Each party's firm ids, unique and non-empty.
    fpr : float or None
        False-positive probability for the whole query; None chooses it (`choose_fpr`).

    Returns
    -------
    ids : np.ndarray
        The client's ids found in the server's set, in the client's order. With probability ``fpr``
        it holds one the server lacks.
    transcript : PsiTranscript
        Bytes each way, seconds, fpr and set sizes.

    Raises
    ------
    FedriskError
        On an empty set, a non-string or duplicated id (naming the party), or an impossible fpr.
    """
    client_list = _validated_ids(client_name, client_ids)
    server_list = _validated_ids(server_name, server_ids)
    n_client, n_server = len(client_list), len(server_list)
    chosen = choose_fpr(n_client, n_server, fpr)

    start = time.perf_counter()
    client = psi.client.CreateWithNewKey(True)
    server = psi.server.CreateWithNewKey(True)
    # Each message is serialized and re-parsed, as it would be on a real wire.
    setup = server.CreateSetupMessage(chosen, n_client, server_list, psi.DataStructure.GCS)
    setup_bytes = setup.SerializeToString()
    request_bytes = client.CreateRequest(client_list).SerializeToString()
    request = psi.Request()
    request.ParseFromString(request_bytes)
    response_bytes = server.ProcessRequest(request).SerializeToString()
    setup_in, response_in = psi.ServerSetup(), psi.Response()
    setup_in.ParseFromString(setup_bytes)
    response_in.ParseFromString(response_bytes)
    positions = np.sort(np.asarray(client.GetIntersection(setup_in, response_in), dtype=np.int64))
    seconds = time.perf_counter() - start

    source = client_ids if isinstance(client_ids, np.ndarray) else np.asarray(client_list)
    transcript = PsiTranscript(
        client=client_name,
        server=server_name,
        bytes_client_to_server=len(request_bytes),
        bytes_server_to_client=len(setup_bytes) + len(response_bytes),
        seconds=seconds,
        fpr=chosen,
        n_client=n_client,
        n_server=n_server,
    )
    return source[positions], transcript


def _mp_context() -> multiprocessing.context.BaseContext:
    """forkserver starts workers faster than spawn (measured ~0.5 s vs ~0.8 s); neither forks live PSI state."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _n_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def align_parties(
    label_holder: str,
    label_ids: Sequence[str],
    partners: Mapping[str, Sequence[str]],
    *,
    parallel: bool = True,
    seed: int = 0,
    require_overlap: bool = True,
    fpr: float | None = None,
) -> Alignment:
    """Find, for every partner, the label holder's firms it also holds, by one PSI per partner.

    Parameters
    ----------
    label_holder : str
        Name of the party holding the labels; it is the PSI client and the only one to learn each
        intersection.
    label_ids : sequence of str
        The label holder's firm ids (unique, non-empty).
    partners : mapping of str to sequence of str
        Partner name -> its firm ids (unique, non-empty). Each partner is a PSI server.
    parallel : bool
        Run partners in separate processes (one per partner, up to the number of CPUs) when there is
        more than one partner and enough ids for it to pay off (`PARALLEL_MIN_ITEMS`).
    seed : int
        Seeds the shuffle of each partner's shared-id list.
    require_overlap : bool
        Raise if a partner shares no firm with the label holder.
    fpr : float or None
        False-positive probability per PSI; None chooses it per pair (`choose_fpr`).

    Returns
    -------
    Alignment

    Raises
    ------
    FedriskError
        On empty or duplicated ids (naming the party), a partner named like the label holder, no
        partners, or (with ``require_overlap``) a partner sharing no firm with the label holder.
    """
    start = time.perf_counter()
    if not partners:
        raise FedriskError(_FIELD, "no partners to align with", "give at least one partner's ids")
    if label_holder in partners:
        raise FedriskError(_FIELD, f"{label_holder!r} is both label holder and partner")
    # Validate everything up front, in this process: errors are clear and never cross a process pool.
    label_list = _validated_ids(label_holder, label_ids)
    partner_lists = {name: _validated_ids(name, ids) for name, ids in partners.items()}
    for ids in partner_lists.values():  # an impossible fpr fails here, before any process starts
        choose_fpr(len(label_list), len(ids), fpr)
    label_arr = label_ids if isinstance(label_ids, np.ndarray) else np.asarray(label_list)

    n_items = sum(len(label_list) + len(ids) for ids in partner_lists.values())
    workers = min(len(partner_lists), _n_cpus())
    jobs = [(label_holder, label_arr, name, ids) for name, ids in partner_lists.items()]
    if parallel and workers > 1 and n_items >= PARALLEL_MIN_ITEMS:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context()) as pool:
            futures = [pool.submit(private_intersection, *job, fpr=fpr) for job in jobs]
            results = [f.result() for f in futures]
    else:
        results = [private_intersection(*job, fpr=fpr) for job in jobs]

    shared: dict[str, np.ndarray] = {}
    for name, (ids, _) in zip(partner_lists, results, strict=True):
        if require_overlap and len(ids) == 0:
            raise FedriskError(
                _FIELD, f"no firm ids shared between {label_holder!r} and {name!r}", _SAME_ID_FIX
            )
        # Order hides nothing useful from the partner only if it is random; key the stream by name
        # so a partner's list does not depend on which other partners take part.
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        shared[name] = ids[rng.permutation(len(ids))]
    return Alignment(
        label_holder=label_holder,
        shared_ids=shared,
        transcripts=[t for _, t in results],
        seconds=time.perf_counter() - start,
    )


def partner_rows(partner_ids: np.ndarray, requested_ids: np.ndarray) -> np.ndarray:
    """Row positions in the partner's table of the ids the label holder asks it to compute for.

    Parameters
    ----------
    partner_ids : np.ndarray
        The partner's own ids, unique, in its table's row order.
    requested_ids : np.ndarray
        The ids the label holder sent (`Alignment.shared_ids` for this partner).

    Returns
    -------
    np.ndarray
        ``int64`` positions aligned with ``requested_ids``; ``-1`` for ids the partner does not hold
        (PSI false positives, probability ``fpr`` per run). The partner drops those rows.
    """
    index = pd.Index(np.asarray(partner_ids))
    if not index.is_unique:
        raise FedriskError(_FIELD, "partner ids are not unique", "give one row per firm")
    return index.get_indexer(np.asarray(requested_ids)).astype(np.int64, copy=False)
