"""JSON for numpy values and paths, and the one atomic write every output file goes through."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def json_default(value: Any) -> Any:
    """`json.dumps(..., default=json_default)`: numpy scalars and arrays, and paths, as plain JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _read_umask() -> int:
    mask = os.umask(0o022)  # no os.getumask before Python 3.13: set and restore, once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file.

    The file gets the mode ``open()`` would give it (0666 minus the user's umask, 0644 typically), not
    mkstemp's 0600; private results come from a private directory (``runner.private_outputs``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=2, default=json_default).encode("utf-8"))


def make_private(directory: Path) -> None:
    """Owner-only access to a results directory (0700): whatever the files' modes, nobody else can read them."""
    directory.chmod(0o700)


def fingerprint(config_dump: dict) -> str:
    """Stable hash of a resolved config: a resumed run must be the same experiment."""
    text = json.dumps(config_dump, sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
