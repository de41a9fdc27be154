"""Real tables instead of the synthetic world: one CSV/Parquet file per party, checked at the boundary.

Every check here ends in a `FedriskError` that names the party, the column and the fix, so bad data
never reaches training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from fedrisk.core.errors import FedriskError
from fedrisk.data.table import PartyTable

MAX_ABS_VALUE = 1e100
"""Largest magnitude a numeric feature may take (its square must stay finite in float64)."""


class TableSource(Protocol):
    name: str
    path: Path
    id: str
    label: str | None


def read_frame(path: Path, field: str) -> pd.DataFrame:
    if not path.exists():
        raise FedriskError(
            field, f"file not found: {path}", "check the path (relative paths start at the config file)"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise FedriskError(field, f"unsupported file type '{suffix}'", "use a .csv or .parquet file")
    except FedriskError:
        raise
    except pd.errors.EmptyDataError:
        raise FedriskError(field, f"{path.name} is empty", "give a table with a header and rows") from None
    except Exception as exc:  # the reader's own message is the useful part (on one line)
        reason = " ".join(str(exc).split())
        raise FedriskError(
            field, f"cannot read {path.name} ({type(exc).__name__}: {reason})", "check the file"
        ) from None
    if frame.empty:
        raise FedriskError(field, f"{path.name} has no rows", "give a table with at least one row")
    return frame


def table_from_frame(frame: pd.DataFrame, name: str, id_column: str, label_column: str | None) -> PartyTable:
    field = f"data.parties.{name}"
    for column, role in ((id_column, "id"), (label_column, "label")):
        if column is not None and column not in frame.columns:
            raise FedriskError(
                f"{field}.{role}",
                f"column '{column}' not in the table (columns: {', '.join(map(str, frame.columns[:12]))})",
                f"set {role} to one of the table's columns",
            )
    ids = frame[id_column]
    if ids.isna().any():
        raise FedriskError(f"{field}.id", f"{int(ids.isna().sum())} rows have no id", "drop or fill them")
    ids = ids.astype(str).to_numpy(dtype=object)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        example = unique[counts > 1][0]
        raise FedriskError(
            f"{field}.id",
            f"{int((counts > 1).sum())} duplicate ids (e.g. {example!r})",
            "give each firm one row per party (aggregate or deduplicate first)",
        )
    label = None
    if label_column is not None:
        label = _binary_label(frame[label_column], f"{field}.label")
    features = frame.drop(columns=[c for c in (id_column, label_column) if c is not None])
    if features.shape[1] == 0:
        raise FedriskError(
            field, "the table has no feature columns", "add at least one column besides id and label"
        )
    features = _typed_features(features.reset_index(drop=True))
    if features.isna().all().all():
        raise FedriskError(
            field, "every feature value is missing", "give at least one feature column with values"
        )
    return PartyTable(name=name, ids=ids, features=features, label=label)


def _binary_label(column: pd.Series, field: str) -> np.ndarray:
    if column.isna().any():
        raise FedriskError(
            field, f"{int(column.isna().sum())} missing labels", "drop unlabelled rows or fill them"
        )
    values = set(pd.unique(column).tolist())
    if values <= {0, 1} or values <= {True, False}:
        return column.astype(np.int8).to_numpy()
    shown = sorted(map(str, values))[:6]
    raise FedriskError(
        field, f"label must be binary 0/1 (got values {shown})", "encode default as 1 and non-default as 0"
    )


def _typed_features(features: pd.DataFrame) -> pd.DataFrame:
    """Numbers to float64 (NaN = missing); everything else becomes a pandas category."""
    out = {}
    for column in features.columns:
        series = features[column]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            values = series.astype(np.float64)
            if not np.isfinite(values.fillna(0.0)).all():
                raise FedriskError(
                    f"column {column!r}",
                    "contains infinite values",
                    "replace them with a finite value or leave empty",
                )
            largest = float(values.abs().max()) if values.notna().any() else 0.0
            if largest > MAX_ABS_VALUE:  # standardising squares them: beyond ~1e154 float64 overflows
                raise FedriskError(
                    f"column {column!r}",
                    f"has values up to {largest:.3g}, beyond ±{MAX_ABS_VALUE:.0e}",
                    "rescale the column (e.g. to thousands, or take a log)",
                )
            out[str(column)] = values
        else:
            out[str(column)] = series.astype("string").astype("category")
    return pd.DataFrame(out)


def load_tables(sources: Sequence[TableSource]) -> dict[str, PartyTable]:
    """Read and check every party's table; the label rules depend on the topology and are checked later."""
    tables = {}
    for source in sources:
        frame = read_frame(Path(source.path), f"data.parties.{source.name}.path")
        tables[source.name] = table_from_frame(frame, source.name, source.id, source.label)
    return tables
