"""Flower 1.41's fixed waits on the deployment path, and the one place fedrisk shortens them.

Measured on loopback, a split-learning round trip in Flower 1.41 is mostly waiting, at fixed intervals
no flag, environment variable or config changes (file: line in ``site-packages/flwr``):

- ``supernode/start_client_internal.py:263``: the SuperNode sleeps ``time.sleep(3)`` after every pull that
  found no message. In a synchronous protocol the next message is never there yet when the node asks
  right after replying, so every round trip pays up to 3 s.
- ``supernode/start_client_internal.py:470`` and ``:506``: the SuperNode waits for the ClientApp's reply
  (and its objects) in ``time.sleep(0.5)`` steps.
- ``supercore/constant.py:48-49`` (``PULL_INITIAL_BACKOFF = 1``, ``PULL_BACKOFF_CAP = 10``): whoever pulls
  a message's objects before they have all arrived (the SuperNode from the SuperLink, the ClientApp from
  the SuperNode, the ServerApp's grid from the SuperLink) backs off 1 s, then 2 s, ...; the ClientApp
  task is created before the SuperNode has the message's objects, so a warm ClientApp always hits it.
- ``superlink/grid/http_grid.py:412``: the deployed grid's ``send_and_receive`` polls every 3 s
  (fedrisk's ServerApp uses `fedrisk.federation.deploy.apps.PollingGrid` instead).
- ``supercore/superexec/run_superexec.py`` (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``, default 1 s): the one
  wait Flower lets you set.

The functions here replace module-level names in Flower's modules *of the calling process* only: the
``time`` name of the SuperNode loop (a shim whose ``sleep`` shortens exactly those waits) and the object
pullers (``functools.partial`` with short back-off, through the ``initial_backoff``/``backoff_cap``
parameters Flower's pullers already take). Each checks that the code it expects is there, and raises
`PollingUnsupported` otherwise (another Flower version): then run Flower's commands unchanged.
"""

from __future__ import annotations

import functools
import inspect
import time
from types import ModuleType

#: Where Flower 1.41 waits a fixed time (seconds), for the benchmark's JSON and the docs.
FLOWER_FIXED_WAITS = {
    "supernode_idle_poll_seconds": 3.0,  # supernode/start_client_internal.py:263
    "supernode_reply_poll_seconds": 0.5,  # supernode/start_client_internal.py:470, 506
    "object_pull_initial_backoff_seconds": 1.0,  # supercore/constant.py:48 (cap 10 s, line 49)
    "http_grid_send_and_receive_poll_seconds": 3.0,  # superlink/grid/http_grid.py:412
    "superexec_task_poll_seconds": 1.0,  # supercore/superexec/run_superexec.py (env var sets it)
}
#: Object pulls' back-off once shortened: first wait and ceiling (seconds).
SHORT_PULL_BACKOFF = (0.005, 0.1)

#: Fixed waits in ``flwr.supernode.start_client_internal`` (Flower 1.41) this launcher shortens.
IDLE_WAIT = 3
REPLY_WAIT = 0.5
_EXPECTED = (f"time.sleep({IDLE_WAIT})", f"time.sleep({REPLY_WAIT})")


class PollingUnsupported(RuntimeError):
    """The installed Flower does not have the waits this module shortens."""


class Backoff:
    """A poll interval: ``low`` right after activity, doubling up to ``hot_max`` while the last activity is
    under ``hot_window`` seconds old (a run is going on: the next message comes within a round trip), and
    up to ``high`` after that (idle: few polls)."""

    def __init__(self, low: float, high: float, hot_max: float = 0.05, hot_window: float = 10.0) -> None:
        if not 0 < low <= min(hot_max, high):
            raise ValueError(f"need 0 < low <= hot_max, high; got {low, hot_max, high}")
        self.low, self.high, self.hot_max, self.hot_window = low, high, hot_max, hot_window
        self.current = low
        self.active_at = -float("inf")

    def next(self) -> float:
        """The interval to wait now (and grow the next one)."""
        interval = self.current
        ceiling = self.hot_max if time.monotonic() - self.active_at < self.hot_window else self.high
        self.current = min(max(self.current * 2, self.low), max(ceiling, self.low))
        return min(interval, max(ceiling, self.low))

    def reset(self) -> None:
        """Activity: poll fast again."""
        self.current = self.low
        self.active_at = time.monotonic()


class _ShortWaits:
    """Stands in for the ``time`` module inside Flower's SuperNode loop; only ``sleep`` differs."""

    def __init__(
        self, idle_min: float, idle_max: float, reply_interval: float, hot_max: float = 0.05
    ) -> None:
        self.idle = Backoff(idle_min, idle_max, hot_max=min(hot_max, idle_max))
        self.reply_interval = reply_interval
        self.idle_waits = 0
        self.reply_waits = 0

    def sleep(self, seconds: float) -> None:
        if seconds == IDLE_WAIT:
            self.idle_waits += 1
            time.sleep(self.idle.next())
        elif seconds == REPLY_WAIT:
            self.reply_waits += 1
            time.sleep(self.reply_interval)
        else:
            time.sleep(seconds)

    def got_message(self) -> None:
        self.idle.reset()

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def patch_supernode_polling(
    idle_min: float = 0.01, idle_max: float = 0.5, reply_interval: float = 0.005
) -> _ShortWaits:
    """Shorten the SuperNode loop's fixed waits in this process (see the module docstring).

    Raises
    ------
    PollingUnsupported
        If ``flwr.supernode.start_client_internal`` does not contain the expected waits.
    """
    if not 0 < idle_min <= idle_max or reply_interval <= 0:
        raise ValueError(f"need 0 < idle_min <= idle_max and reply_interval > 0, got {idle_min, idle_max}")
    import flwr.supernode.start_client_internal as loop

    _check(loop)
    shim = _ShortWaits(idle_min, idle_max, reply_interval)
    pull = loop._pull_and_store_message

    def pull_and_note(*args: object, **kwargs: object) -> int | None:
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            shim.got_message()
        return run_id

    loop.time = shim  # type: ignore[assignment]
    loop._pull_and_store_message = pull_and_note  # type: ignore[assignment]
    shorten_object_pulls(loop, "pull_objects")
    return shim


def _check(loop: ModuleType) -> None:
    try:
        source = inspect.getsource(loop)
    except (OSError, TypeError):  # no source to check: treat as a Flower we do not know
        source = ""
    missing = [text for text in _EXPECTED if text not in source]
    if missing or not hasattr(loop, "_pull_and_store_message") or not isinstance(loop.time, ModuleType):
        import flwr

        raise PollingUnsupported(
            f"flwr {flwr.__version__}'s SuperNode loop lacks {missing or '_pull_and_store_message'}; "
            "start `flower-supernode` directly (fedrisk's short polls were written against flwr 1.41)"
        )


def shorten_object_pulls(
    module: ModuleType, name: str, backoff: tuple[float, float] = SHORT_PULL_BACKOFF
) -> None:
    """Make ``module.name`` (one of Flower's object pullers) back off from ``backoff[0]`` up to ``backoff[1]``."""
    puller = getattr(module, name, None)
    params = set(inspect.signature(puller).parameters) if callable(puller) else set()
    if not {"initial_backoff", "backoff_cap"} <= params:
        import flwr

        raise PollingUnsupported(
            f"flwr {flwr.__version__}: {module.__name__}.{name} takes no initial_backoff/backoff_cap"
        )
    if isinstance(puller, functools.partial):  # already shortened in this process
        puller = puller.func
    setattr(module, name, functools.partial(puller, initial_backoff=backoff[0], backoff_cap=backoff[1]))


def shorten_grid_pulls() -> None:
    """In a ServerApp process: the deployed grid's reply pulls back off briefly (not from 1 s)."""
    import flwr.superlink.grid.http_grid as grid

    shorten_object_pulls(grid, "pull_objects")


def shorten_clientapp_pulls() -> None:
    """In a ClientApp process: pulling a task's message from the SuperNode backs off briefly."""
    import flwr.supernode.runtime.run_clientapp as clientapp

    shorten_object_pulls(clientapp, "pull_and_inflate_object_from_tree")
