"""Which party a Flower node is, and that party's table on disk.

Why: a holder's ClientApp must read ONLY its own table. The table is located through the node's own
configuration, the same way under every engine:

- deployment: ``flower-supernode --node-config "party='tax' data-path='/data/tax.parquet'"``;
- in-process (`fedrisk.federation.inprocess`): fedrisk sets the same two keys in ``node_config``;
- Flower's Ray simulation: nodes only get ``partition-id``, so the run config maps it:
  ``party-<pid>`` and ``party-<pid>-data-path``.

Tables are Parquet files with reserved columns ``__id__``, ``__label__``, ``__cohort__`` and the party's
name in the file metadata; a per-process cache (keyed by path, mtime and size) spares ClientApps a re-read
on every message.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid

from fedrisk.core.errors import FedriskError
from fedrisk.core.jsonio import json_default
from fedrisk.data.table import PartyTable
from fedrisk.federation.channel import ClientFailure, MessageLog

ID_COLUMN = "__id__"
LABEL_COLUMN = "__label__"
COHORT_COLUMN = "__cohort__"
RESERVED_COLUMNS = (ID_COLUMN, LABEL_COLUMN, COHORT_COLUMN)
METADATA_KEY = b"fedrisk"

#: Message type of the one-round query that maps node IDs to parties when the server cannot know them.
PARTY_QUERY = "query.fedrisk_party"

_CACHE_SIZE = 8


@dataclass(frozen=True)
class PartyRef:
    """A node's party: its name and the path of its (and only its) table."""

    name: str
    data_path: Path


def resolve_party(context: Context) -> PartyRef:
    """The party this ClientApp runs for, from its node config (or, under Ray, its partition ID)."""
    node_config = context.node_config
    if "party" in node_config and "data-path" in node_config:
        return PartyRef(str(node_config["party"]), Path(str(node_config["data-path"])))
    if "partition-id" not in node_config:
        raise FedriskError(
            "node_config",
            f"this node has neither 'party'/'data-path' nor 'partition-id' (has {sorted(node_config)})",
            "start the SuperNode with --node-config \"party='tax' data-path='/data/tax.parquet'\"",
        )
    pid = int(node_config["partition-id"])
    name_key, path_key = f"party-{pid}", f"party-{pid}-data-path"
    missing = [k for k in (name_key, path_key) if k not in context.run_config]
    if missing:
        raise FedriskError(
            f"run_config.{missing[0]}",
            f"node with partition-id {pid} cannot find its party",
            f"put '{name_key}' and '{path_key}' in the run config (fedrisk.federation.backends does this)",
        )
    return PartyRef(str(context.run_config[name_key]), Path(str(context.run_config[path_key])))


# --- discovery: node ID -> party, for engines where the server cannot know it --------------------------


def party_query_reply(message: Message, context: Context) -> Message:
    """Answer `PARTY_QUERY` with this node's party name (never its data path)."""
    party = resolve_party(context).name
    return Message(RecordDict({"party": ConfigRecord({"party": party})}), reply_to=message)


def wait_for_nodes(grid: Grid, count: int, timeout: float = 120.0) -> list[int]:
    """Node IDs once at least ``count`` nodes are connected (engines register nodes after the ServerApp
    starts: asking earlier finds none, and a run over no nodes would "finish" having done nothing)."""
    deadline = time.monotonic() + timeout
    while len(node_ids := list(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(node_ids)} of {count} nodes connected within {timeout:.0f} s")
        time.sleep(0.05)
    return node_ids


def discover_parties(
    grid: Grid,
    log: MessageLog | None = None,
    server_name: str = "server",
    expected: int | None = None,
    timeout: float = 120.0,
) -> dict[int, str]:
    """Ask every node which party it is (ClientApps wrapped by `backends.PartyClientApp` answer).

    Under the Ray simulation and the deployment engine node IDs are random and the server has no other
    way to tell the bank from the tax authority. Waits for ``expected`` nodes first (if given). The round
    trip is recorded in ``log`` if given (it does cross the boundary). From a ServerApp use
    `party_nodes`: it reuses what the driver already knows.
    """
    node_ids = wait_for_nodes(grid, expected, timeout) if expected else list(grid.get_node_ids())
    queries = [
        Message(RecordDict(), dst_node_id=node_id, message_type=PARTY_QUERY, group_id="discovery")
        for node_id in node_ids
    ]
    replies = list(grid.send_and_receive(queries))
    names: dict[int, str] = {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise ClientFailure(f"node {node}", node, PARTY_QUERY, reply.error.reason or "")
        names[node] = str(reply.content.config_records["party"]["party"])
    if len(names) != len(node_ids):
        raise RuntimeError(f"only {len(names)} of {len(node_ids)} nodes said which party they are")
    if log is not None:
        for query in queries:
            log.record_message(query, server_name, names[query.metadata.dst_node_id])
        for reply in replies:
            log.record_message(reply, names[reply.metadata.src_node_id], server_name)
    return names


def party_nodes(grid: Grid) -> dict[str, int]:
    """``{party name: node ID}`` for a ServerApp: from the grid if it knows (RecordingGrid), else asked."""
    names = getattr(grid, "node_names", None)
    if not names or len(names) < len(list(grid.get_node_ids())):
        names = discover_parties(grid)
    by_party: dict[str, int] = {}
    for node_id, party in names.items():
        if party in by_party:
            raise FedriskError("parties", f"two nodes claim to be '{party}'", "give every node its own party")
        by_party[party] = node_id
    return by_party


# --- tables on disk -----------------------------------------------------------------------------------


def write_party_table(table: PartyTable, path: str | Path) -> Path:
    """Write ``table`` as Parquet (atomically), keeping category dtypes, NaNs, label, cohort and name."""
    path = Path(path)
    clash = [c for c in table.features.columns if not isinstance(c, str) or c in RESERVED_COLUMNS]
    if clash:
        raise FedriskError(
            f"parties.{table.name}.features",
            f"column names {clash!r} are not strings or are reserved",
            f"rename them (reserved: {', '.join(RESERVED_COLUMNS)})",
        )
    columns: dict[str, object] = {ID_COLUMN: pd.Series(np.asarray(table.ids).astype(str), dtype=object)}
    frame = pd.concat([pd.DataFrame(columns), table.features.reset_index(drop=True)], axis=1)
    if table.label is not None:
        frame[LABEL_COLUMN] = np.asarray(table.label, dtype=np.int8)
    if table.cohort is not None:
        frame[COHORT_COLUMN] = np.asarray(table.cohort, dtype=np.int8)
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    try:
        info = json.dumps({"party": table.name, "meta": table.meta}, default=json_default)
    except TypeError as ex:
        raise FedriskError(f"parties.{table.name}.meta", str(ex), "keep meta to JSON-like values") from ex
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), METADATA_KEY: info.encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    pq.write_table(arrow, tmp)
    tmp.replace(path)  # readers (and the cache, keyed by mtime) never see a half-written file
    return path


_cache: OrderedDict[str, tuple[int, int, PartyTable]] = OrderedDict()
_cache_lock = threading.Lock()


def read_party_table(path: str | Path) -> PartyTable:
    """The table at ``path``, cached per process; treat it as read-only (its arrays are write-protected)."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FedriskError("data-path", f"no party table at {path}", "check the node's data-path") from None
    key = str(path.resolve())
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[:2] == (stat.st_mtime_ns, stat.st_size):
            _cache.move_to_end(key)
            return hit[2]
    table = _load(path)
    with _cache_lock:
        _cache[key] = (stat.st_mtime_ns, stat.st_size, table)
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return table


def clear_table_cache() -> None:
    """Forget cached tables (tests; long-lived processes that switch worlds)."""
    with _cache_lock:
        _cache.clear()


def _readonly(values: np.ndarray) -> np.ndarray:
    values.flags.writeable = False
    return values


def _load(path: Path) -> PartyTable:
    arrow = pq.read_table(path)
    raw = (arrow.schema.metadata or {}).get(METADATA_KEY)
    if raw is None or ID_COLUMN not in arrow.column_names:
        raise FedriskError(
            "data-path", f"{path} is not a fedrisk party table", "write it with fedrisk's write_party_table"
        )
    info = json.loads(raw)
    frame = arrow.to_pandas()
    label = frame.pop(LABEL_COLUMN).to_numpy(np.int8) if LABEL_COLUMN in frame else None
    cohort = frame.pop(COHORT_COLUMN).to_numpy(np.int8) if COHORT_COLUMN in frame else None
    ids = frame.pop(ID_COLUMN).to_numpy(dtype=object)
    return PartyTable(
        name=info["party"],
        ids=_readonly(ids),
        features=frame.reset_index(drop=True),
        label=None if label is None else _readonly(label),
        cohort=None if cohort is None else _readonly(cohort),
        meta=info.get("meta") or {},
    )
