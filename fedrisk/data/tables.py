"""Real tables instead of the synthetic world: one CSV/Parquet file per party, checked at the boundary.

Every check here ends in a `FedriskError` that names the party, the column and the fix, so bad data
never reaches training. Two reading rules matter for joins and types:

- IDs are text, exactly as written ("0000123" is not "123"), with surrounding whitespace stripped the same
  way at every party; pandas never gets to guess them as numbers.
- A recognised missing-value token (`MISSING_TOKENS`: "n/a", "NA", "null", "-", "?", ...) is a missing
  value in any column, so a numeric column with stray tokens stays numeric; the tokens are counted in one
  `FedriskWarning` per table. Duplicate column names are an error (pandas would silently rename them).
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from fedrisk.core.errors import FedriskError, FedriskWarning
from fedrisk.data.table import PartyTable

MAX_ABS_VALUE = 1e100
"""Largest magnitude a numeric feature may take (its square must stay finite in float64)."""

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "-", "?", "#n/a", "<na>"})
"""Cell values read as missing in every column (compared stripped and lower-cased)."""


class TableSource(Protocol):
    name: str
    path: Path
    id: str
    label: str | None


def read_frame(path: Path, field: str, id_column: str | None = None) -> pd.DataFrame:
    """The file as a DataFrame, ``id_column`` as text; refuses repeated column names.

    CSV cells are kept as written except empty ones (missing): tokens such as "n/a" are resolved, and
    counted, by `table_from_frame`.
    """
    if not path.exists():
        raise FedriskError(
            field, f"file not found: {path}", "check the path (relative paths start at the config file)"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            _check_unique_columns(_csv_header(path), path, field)
            dtype = {id_column: str} if id_column is not None else None
            frame = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""])
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            _check_unique_columns(pq.read_schema(path).names, path, field)
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


def _csv_header(path: Path) -> list[str]:
    """The header row as written: pandas renames a repeated name to "x.1" without a word."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        return next(csv.reader(handle), [])


def _check_unique_columns(names: Sequence[str], path: Path, field: str) -> None:
    repeated = [(name, n) for name, n in Counter(map(str, names)).items() if n > 1]
    if repeated:
        name, n = repeated[0]
        more = f" (and {len(repeated) - 1} more repeated names)" if len(repeated) > 1 else ""
        raise FedriskError(
            field,
            f"column {name!r} appears {n} times in {path.name}{more}",
            "give every column a unique name (rename or drop the duplicates)",
        )


def table_from_frame(frame: pd.DataFrame, name: str, id_column: str, label_column: str | None) -> PartyTable:
    field = f"data.parties.{name}"
    for column, role in ((id_column, "id"), (label_column, "label")):
        if column is not None and column not in frame.columns:
            raise FedriskError(
                f"{field}.{role}",
                f"column '{column}' not in the table (columns: {', '.join(map(str, frame.columns[:12]))})",
                f"set {role} to one of the table's columns",
            )
    if frame.columns.duplicated().any():
        repeated = str(frame.columns[frame.columns.duplicated()][0])
        raise FedriskError(
            field, f"column {repeated!r} appears more than once", "give every column a unique name"
        )
    ids = id_strings(frame[id_column])
    if ids.isna().any():
        raise FedriskError(
            f"{field}.id",
            f"{int(ids.isna().sum())} rows have no id (empty, or a missing-value token such as 'n/a')",
            "drop or fill them",
        )
    ids = ids.to_numpy(dtype=object)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        example = unique[counts > 1][0]
        raise FedriskError(
            f"{field}.id",
            f"{int((counts > 1).sum())} duplicate ids (e.g. {example!r}; ids compare as text, stripped)",
            "give each firm one row per party (aggregate or deduplicate first)",
        )
    label = None
    if label_column is not None:
        label = _binary_label(_without_tokens(frame[label_column], Counter()), f"{field}.label")
    features = frame.drop(columns=[c for c in (id_column, label_column) if c is not None])
    if features.shape[1] == 0:
        raise FedriskError(
            field, "the table has no feature columns", "add at least one column besides id and label"
        )
    tokens: dict[str, Counter] = {}
    features = _typed_features(features.reset_index(drop=True), tokens)
    if features.isna().all().all():
        raise FedriskError(
            field, "every feature value is missing", "give at least one feature column with values"
        )
    _warn_tokens(field, tokens)
    return PartyTable(name=name, ids=ids, features=features, label=label)


def id_strings(column: pd.Series) -> pd.Series:
    """IDs as stripped text, missing tokens as NA: "007" stays "007"; integers that a Parquet writer
    stored as numbers become their digits ("123", not "123.0")."""
    if pd.api.types.is_float_dtype(column) and column.dropna().mod(1).eq(0).all():
        column = column.astype("Int64")  # integers in a float column (a missing value forced the type)
    text = column.astype("string").str.strip()
    return text.mask(text.str.lower().isin(MISSING_TOKENS))


def _without_tokens(series: pd.Series, counts: Counter) -> pd.Series:
    """``series`` with missing-value tokens as NA; the non-blank tokens replaced are added to ``counts``."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return series
    text = series.astype("string").str.strip().str.lower()
    missing = text.isin(MISSING_TOKENS).fillna(False).to_numpy(dtype=bool)
    if not missing.any():
        return series
    counts.update(t for t in text[missing].tolist() if t)  # blank cells are plain missing values
    return series.mask(missing)


def _warn_tokens(field: str, tokens: dict[str, Counter]) -> None:
    if not tokens:
        return
    total = sum(sum(c.values()) for c in tokens.values())
    kinds = ", ".join(repr(t) for t in sorted({t for c in tokens.values() for t in c}))
    columns = ", ".join(f"{col}: {sum(c.values())}" for col, c in list(tokens.items())[:5])
    more = f" and {len(tokens) - 5} more columns" if len(tokens) > 5 else ""
    warnings.warn(
        f"{field}: {total} cells with a missing-value token ({kinds}) read as missing ({columns}{more})",
        FedriskWarning,
        stacklevel=3,
    )


def _binary_label(column: pd.Series, field: str) -> np.ndarray:
    if column.isna().any():
        raise FedriskError(
            field, f"{int(column.isna().sum())} missing labels", "drop unlabelled rows or fill them"
        )
    if not (pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column)):
        numbers = pd.to_numeric(column.astype("string").str.strip(), errors="coerce")
        if numbers.notna().all():  # "0"/"1" written as text (a token elsewhere made the column text)
            column = numbers
    values = set(pd.unique(column).tolist())
    if values <= {0, 1} or values <= {True, False}:
        return column.astype(np.int8).to_numpy()
    shown = sorted(map(str, values))[:6]
    raise FedriskError(
        field, f"label must be binary 0/1 (got values {shown})", "encode default as 1 and non-default as 0"
    )


def _typed_features(features: pd.DataFrame, tokens: dict[str, Counter]) -> pd.DataFrame:
    """Numbers to float64 (NaN = missing); everything else becomes a pandas category.

    A text column whose values are all numbers once its missing-value tokens are gone is numeric; the
    tokens found go into ``tokens`` (column -> Counter).
    """
    out = {}
    for column in features.columns:
        found: Counter = Counter()
        original = features[column]
        series = _without_tokens(original, found)
        if found:
            tokens[str(column)] = found
        # a text column that held missing tokens is numeric if every other value is a number; a text column
        # without any (e.g. Parquet codes "001", "002") keeps its type: the writer chose it
        if series is not original:
            text = series.astype("string").str.strip()
            numbers = pd.to_numeric(text, errors="coerce")
            if text.notna().any() and numbers.notna().sum() == text.notna().sum():
                series = numbers  # every value left is a number: the column is numeric
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            values = pd.Series(series.to_numpy(dtype=np.float64, na_value=np.nan))
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
        frame = read_frame(Path(source.path), f"data.parties.{source.name}.path", source.id)
        tables[source.name] = table_from_frame(frame, source.name, source.id, source.label)
    return tables
