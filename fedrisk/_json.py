"""JSON for numpy values and paths (results, manifests, party metadata)."""

from __future__ import annotations

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
