"""Environment Flower needs before it is imported.

Flower phones home, checks for updates and (under `flwr run`) installs runtime dependencies unless told
not to; on this project's machines the last one downloads gigabytes. We set safe defaults once, at import,
without overriding anything the user exported.
"""

from __future__ import annotations

import os
from pathlib import Path

_FLOWER_DEFAULTS = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


def project_state_dir() -> Path:
    """Directory fedrisk owns for Flower's and Ray's state (``$FEDRISK_HOME`` or ``~/.cache/fedrisk``)."""
    base = os.environ.get("FEDRISK_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fedrisk"
    )
    return Path(base)


def configure_flower_environment() -> None:
    """Set Flower's and Ray's environment defaults (never overriding what is already set)."""
    for key, value in _FLOWER_DEFAULTS.items():
        os.environ.setdefault(key, value)
    state = project_state_dir()
    os.environ.setdefault("FLWR_HOME", str(state / "flwr"))
    # Ray puts sockets under RAY_TMPDIR; unix socket paths are limited to ~107 bytes, so keep it short.
    os.environ.setdefault("RAY_TMPDIR", str(state / "ray"))
