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
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import private_set_intersection.python as psi

from fedrisk.core.errors import FedriskError
from fedrisk.core.progress import report
from fedrisk.protocol.rosters import shuffled_roster

__all__ = [
    "Alignment",
    "PsiTranscript",
    "align_parties",
    "choose_fpr",
    "gcs_hash_range",
    "private_intersection",
]

#: Target false-positive probability for a whole PSI query (not per item).
DEFAULT_FPR = 1e-9
#: openmined-psi's GCS hashes into ``[0, max(n_client, n_server) * n_client / fpr)`` as int64; past
#: 2**63 (~9.223e18) the range wraps negative and the filter is garbage, so stay under this.
GCS_HASH_RANGE_LIMIT = 9.2e18
#: The GCS Golomb parameter is computed from ``1 - n_server / hash_range`` in doubles: once the mean gap
#: nears 2**53 that is exactly 1.0 and compression fails (measured: 100 server ids, range 8.3e18). Keep
#: the mean gap under 2**50 so the parameter is also accurate.
GCS_MEAN_GAP_LIMIT = 2.0**50
#: The GCS fpr is raised at most to this to satisfy both limits; beyond it the Bloom filter (no such
#: limits, ~40% larger setup message, same speed) is used at the requested fpr.
GCS_MAX_FPR = 1e-6
#: Below this many ids (summed over pairs) worker start-up (~0.5 s idle, ~2 s on a busy machine) outweighs
#: the parallel gain; measured with experiments/benchmarks/psi.py, see docs/psi.md.
PARALLEL_MIN_ITEMS = 20_000

_STRUCTURES = {"gcs": psi.DataStructure.GCS, "bloom_filter": psi.DataStructure.BLOOM_FILTER}
_FIELD = "data.parties"
_SAME_ID_FIX = "use the same firm identifier (e.g. the registration number) in the same format at every party"


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
        False-positive probability used for the whole query (`choose_fpr` gives the data structure).
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
        (rarely) hold an id the partner lacks: the partner drops it (see `fedrisk.protocol.rosters.partner_rows`).
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


def choose_fpr(n_client: int, n_server: int, fpr: float | None = None) -> tuple[float, str]:
    """The false-positive probability and server data structure for one PSI, safe from the library's limits.

    GCS gives the smallest setup message but overflows (see `GCS_HASH_RANGE_LIMIT`,
    `GCS_MEAN_GAP_LIMIT`) for large client sets or tiny server sets; the Bloom filter has neither limit.

    Parameters
    ----------
    n_client, n_server : int
        Set sizes (positive).
    fpr : float or None
        Requested probability of any false positive in the whole query. None aims at `DEFAULT_FPR`
        and lets GCS raise it up to `GCS_MAX_FPR`; a given value is used exactly.

    Returns
    -------
    fpr : float
        The probability passed to the library (and recorded in the transcript).
    structure : str
        ``"gcs"`` or ``"bloom_filter"``.

    Raises
    ------
    FedriskError
        If a set size is not positive or a requested fpr is outside (0, 1).
    """
    if n_client <= 0 or n_server <= 0:
        raise FedriskError("psi", f"set sizes must be positive, got {n_client} and {n_server}")
    if fpr is not None:
        if not 0.0 < fpr < 1.0:
            raise FedriskError("psi.fpr", f"must be in (0, 1), got {fpr}", "use e.g. 1e-9, or leave it unset")
        fpr = float(fpr)
        return (fpr, "gcs") if _gcs_fits(n_client, n_server, fpr) else (fpr, "bloom_filter")
    m = max(n_client, n_server)
    needed = m * n_client / min(GCS_HASH_RANGE_LIMIT, GCS_MEAN_GAP_LIMIT * n_server)
    chosen = max(DEFAULT_FPR, needed)
    while not _gcs_fits(n_client, n_server, chosen) and chosen <= GCS_MAX_FPR:
        chosen = math.nextafter(chosen, 1.0)  # rounding at the boundary: step up by ulps
    if chosen > GCS_MAX_FPR:
        return DEFAULT_FPR, "bloom_filter"
    return chosen, "gcs"


def gcs_hash_range(n_client: int, n_server: int, fpr: float) -> float:
    """The library's GCS hash range, in its own double arithmetic (``max / (fpr / n_client)``)."""
    return float(max(n_client, n_server)) / (fpr / float(n_client))


def _gcs_fits(n_client: int, n_server: int, fpr: float) -> bool:
    hash_range = gcs_hash_range(n_client, n_server, fpr)
    return hash_range < GCS_HASH_RANGE_LIMIT and hash_range / n_server < GCS_MEAN_GAP_LIMIT


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
        False-positive probability for the whole query; None chooses it (`choose_fpr`, which also
        picks the server's data structure).

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
        On an empty set, a non-string or duplicated id (naming the party), or an fpr outside (0, 1).
    """
    client_list = _validated_ids(client_name, client_ids)
    server_list = _validated_ids(server_name, server_ids)
    n_client, n_server = len(client_list), len(server_list)
    chosen, structure = choose_fpr(n_client, n_server, fpr)

    start = time.perf_counter()
    client = psi.client.CreateWithNewKey(True)
    server = psi.server.CreateWithNewKey(True)
    # Each message is serialized and re-parsed, as it would be on a real wire.
    setup = server.CreateSetupMessage(chosen, n_client, server_list, _STRUCTURES[structure])
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
    if fpr is not None:  # a bad fpr fails here, before any process starts
        choose_fpr(1, 1, fpr)
    label_arr = label_ids if isinstance(label_ids, np.ndarray) else np.asarray(label_list)

    n_items = sum(len(label_list) + len(ids) for ids in partner_lists.values())
    workers = min(len(partner_lists), _n_cpus())
    jobs = [(label_holder, label_arr, name, ids) for name, ids in partner_lists.items()]
    report(f"PSI with {', '.join(partner_lists)}", 0, len(jobs))
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
        shared[name] = shuffled_roster(ids, name, seed)
    return Alignment(
        label_holder=label_holder,
        shared_ids=shared,
        transcripts=[t for _, t in results],
        seconds=time.perf_counter() - start,
    )
