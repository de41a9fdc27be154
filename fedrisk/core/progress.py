"""Progress from deep inside a unit of work (PSI, epochs, rounds, trees) to whoever displays it.

Training loops and protocols call ``report("epoch", 3, 20)``; the runner names the unit and method being
run; the CLI (``fedrisk.runner.progress``) installs a reporter that draws them, across worker processes.
With no reporter installed every call is a no-op, so library use and tests pay nothing. Hand-written:
a process-wide callback is all this needs (rich draws, the stdlib queue carries).
"""

from __future__ import annotations

from collections.abc import Callable

Reporter = Callable[[str, str, int, int | None], None]
"""``reporter(unit, stage, done, total)``: unit like ``"base seed=2"``, stage like ``"federated: epoch"``."""

_reporter: Reporter | None = None
_unit = ""
_method = ""


def set_reporter(reporter: Reporter | None) -> Reporter | None:
    """Install ``reporter`` for this process; returns the previous one (to restore it)."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def begin_unit(point: str, seed: int) -> None:
    """The runner starts a (point, seed): building its world and splits comes first."""
    global _unit, _method
    _unit, _method = f"{point} seed={seed}", ""
    report("preparing data")


def begin_method(method: str) -> None:
    """The runner starts a method (or an audit) of the current unit."""
    global _method
    _method = method
    report("starting")


def report(stage: str, done: int = 0, total: int | None = None) -> None:
    """One step of the current method: ``report("epoch", 3, 20)``, ``report("PSI with tax", 0, 1)``."""
    if _reporter is not None:
        _reporter(_unit, f"{_method}: {stage}" if _method else stage, done, total)
