"""A ClientApp's live objects kept between messages, checked against the node's ``context.state``.

Flower hands every message a `Context` whose ``state`` is the node's durable record; live objects (torch
modules, histograms, worker pools) cannot live there. Each app keeps them in a process-local cache keyed
by a run token, and ``context.state`` carries ``{token, version, saved}``: ``version`` counts the
messages handled, ``saved`` the last version whose learning state was written into ``context.state``.

- A cache hit at the current version is used as is.
- A miss (another process got this node: a Ray actor, a fresh ClientApp process) rebuilds from
  ``context.state``, which must then be current (``saved == version``), else the run fails loudly.
- Writing the state is skipped while the engine provably keeps this node's Context in this process
  (the same ``state`` object as last time): fedrisk's in-process grid and its warm deployment nodes.

Flower has no such cache (its ``context.state`` holds records only), hence this module.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from flwr.app import ConfigRecord, Context, RecordDict

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    obj: T
    version: int
    state: RecordDict | None = None
    """The ``context.state`` object last seen (the same object again: nothing else can have read it)."""


class NodeState(Generic[T]):
    """Live objects of one ClientApp, keyed by the run token kept in ``context.state[meta_key]``."""

    def __init__(self, meta_key: str, what: str, size: int | None = None) -> None:
        self.meta_key, self.what, self.size = meta_key, what, size
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, context: Context, obj: T) -> None:
        """A new run on this node: a fresh token, version 0, and ``obj`` as its live object."""
        token = uuid.uuid4().hex
        context.state[self.meta_key] = ConfigRecord({"token": token, "version": 0, "saved": 0})
        self._put(token, _Entry(obj, 0))

    def load(self, context: Context, rebuild: Callable[[], T]) -> T:
        """The live object for the current version: cached, or rebuilt from ``context.state``."""
        meta = context.state[self.meta_key]
        token, version = str(meta["token"]), int(meta["version"])
        with self._lock:
            hit = self._entries.get(token)
            if hit is not None and hit.version == version:
                self._entries.move_to_end(token)
                return hit.obj
        if int(meta["saved"]) != version:
            raise RuntimeError(
                f"{self.what} state version {version} was never saved (last saved: {meta['saved']}): the "
                "engine moved this node to another process after fedrisk assumed it would not"
            )
        obj = rebuild()
        self._put(token, _Entry(obj, version))
        return obj

    def save(self, context: Context, obj: T, write: Callable[[], None]) -> None:
        """Count one more handled message; ``write`` the learning state into ``context.state`` unless this
        process provably keeps the Context."""
        meta = context.state[self.meta_key]
        token, saved = str(meta["token"]), int(meta["saved"])
        with self._lock:
            entry = self._entries.get(token)
        if entry is None or entry.obj is not obj:  # evicted meanwhile: nothing can be assumed
            entry = _Entry(obj, int(meta["version"]))
            self._put(token, entry)
        same_context = entry.state is context.state
        entry.version += 1
        entry.state = context.state
        if not same_context:
            write()
            saved = entry.version
        context.state[self.meta_key] = ConfigRecord(
            {"token": token, "version": entry.version, "saved": saved}
        )

    def drop(self, context: Context) -> T | None:
        """Forget this run's live object (returned, e.g. to close its worker processes)."""
        with self._lock:
            entry = self._entries.pop(str(context.state[self.meta_key]["token"]), None)
        return None if entry is None else entry.obj

    def _put(self, token: str, entry: _Entry[T]) -> None:
        with self._lock:
            self._entries[token] = entry
            while self.size is not None and len(self._entries) > self.size:
                self._entries.popitem(last=False)
