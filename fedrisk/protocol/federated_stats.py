"""Preprocessing statistics computed federatedly: global means, variances and category levels.

Why: banks that standardise on their own rows feed one global model features on different scales, and
pooling rows to fit a scaler is exactly what federation forbids. Two exchanges give every bank the
same encoding:

1. **schema** (in the clear): each bank sends its column names, the category levels it has seen and,
   per numeric column, the power of two above its largest absolute value. The server merges them: the
   union of levels and the largest power of two ``s_j`` per column.
2. **moments** (aggregated, optionally under SecAgg+): each bank sends a vector of per-row averages over
   its own rows -- share observed, ``E[x/s]``, ``E[(x/s)^2]`` per numeric column and the share of each
   level per categorical column. Every entry lies in ``[0, 1]`` (that is what the scale ``s`` is for),
   so it fits SecAgg+'s clipping range. Flower's FedAvg weights each vector by the bank's row count,
   which turns the average into the pooled moment: the server learns the population statistics and
   nothing else.

`FederatedPreprocessor` then encodes like `fedrisk.data.preprocessing.HolderPreprocessor` (missing
indicator, standardise, clip, one-hot with rare levels grouped) except that missing numerics are filled
with the global *mean*: a median is not a decomposable statistic. The encoding from sufficient statistics
is hand-written because scikit-learn has no "fit from pooled moments" API. `federated_preprocessor` runs
the same arithmetic without Flower so siloed and pooled baselines can use identical features.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedrisk.core.errors import FedriskError

MISSING_LEVEL = "__missing__"
INFREQUENT_LEVEL = "infrequent_sklearn"  # the name sklearn gives the grouped column


# --- 1. schema -------------------------------------------------------------------------------------------


def local_schema(features: pd.DataFrame) -> dict:
    """What a bank reveals in the clear: columns, the levels it has seen, a power-of-two bound per column."""
    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    exponents = {}
    for column in numeric:
        values = features[column].to_numpy(dtype=np.float64)
        finite = np.abs(values[np.isfinite(values)])
        top = float(finite.max()) if finite.size else 0.0
        exponents[column] = int(math.ceil(math.log2(top))) if top > 0 else 0
    levels = {c: sorted(str(v) for v in features[c].dropna().unique()) for c in categorical}
    return {"numeric": numeric, "categorical": categorical, "exponents": exponents, "levels": levels}


def merge_schemas(schemas: Mapping[str, dict]) -> dict:
    """The server's merge: same columns everywhere, union of levels, largest bound per column."""
    if not schemas:
        raise FedriskError("parties", "no bank answered the schema query", "check the banks' tables")
    names = list(schemas)
    first = schemas[names[0]]
    for name in names[1:]:
        other = schemas[name]
        for key in ("numeric", "categorical"):
            if other[key] != first[key]:
                raise FedriskError(
                    f"parties.{name}",
                    f"{key} columns {other[key]} differ from {names[0]}'s {first[key]}",
                    "give every bank the same feature columns with the same types",
                )
    exponents = {c: max(s["exponents"][c] for s in schemas.values()) for c in first["numeric"]}
    levels = {
        c: sorted(set().union(*(s["levels"][c] for s in schemas.values()))) for c in first["categorical"]
    }
    return {
        "numeric": first["numeric"],
        "categorical": first["categorical"],
        "exponents": exponents,
        "levels": levels,
    }


# --- 2. moments ------------------------------------------------------------------------------------------


def moments_length(schema: dict) -> int:
    """Entries of a moments vector: 3 per numeric column, (levels + missing) per categorical column."""
    return 3 * len(schema["numeric"]) + sum(len(schema["levels"][c]) + 1 for c in schema["categorical"])


def local_moments(features: pd.DataFrame, schema: dict) -> np.ndarray:
    """Per-row averages over this bank's rows (every entry in [0, 1]); FedAvg by row count pools them."""
    n = len(features)
    if n == 0:
        raise FedriskError("parties", "a bank has no training rows", "give every bank some applicants")
    out = []
    for column in schema["numeric"]:
        values = features[column].to_numpy(dtype=np.float64) / 2.0 ** schema["exponents"][column]
        observed = np.isfinite(values)
        filled = np.where(observed, values, 0.0)
        out += [observed.mean(), filled.sum() / n, (filled**2).sum() / n]
    for column in schema["categorical"]:
        values = features[column].astype(object)
        counts = values.dropna().astype(str).value_counts()
        out += [counts.get(level, 0) / n for level in schema["levels"][column]]
        out.append(values.isna().mean())
    return np.asarray(out, dtype=np.float64)


def pool_moments(moments: Sequence[np.ndarray], rows: Sequence[int]) -> np.ndarray:
    """Row-weighted average of banks' moment vectors: what Flower's FedAvg computes on the server."""
    return np.average(np.vstack(moments), axis=0, weights=np.asarray(rows, dtype=np.float64))


# --- 3. the encoder -----------------------------------------------------------------------------------


@dataclass
class FederatedPreprocessor:
    """Encoder built from pooled moments; the same on every bank and in the baselines.

    Parameters
    ----------
    numeric : list of str
        Numeric columns, standardised with the global ``mean`` and ``scale``; missing values get the mean.
    mean, scale : list of float
        Global mean and standard deviation of each numeric column (over observed values).
    indicators : list of str
        Numeric columns with any missing value in the federation; each gets a 0/1 missing flag.
    categorical : dict
        Column -> the levels kept for one-hot (the most frequent, ``MISSING_LEVEL`` counted as a level);
        the rest share one ``INFREQUENT_LEVEL`` column when any level was dropped.
    clip : float
        Standardised values are clipped to ``[-clip, clip]``.
    """

    numeric: list[str]
    mean: list[float]
    scale: list[float]
    indicators: list[str]
    categorical: dict[str, list[str]]
    grouped: dict[str, bool] = field(default_factory=dict)
    clip: float = 6.0

    @classmethod
    def from_moments(
        cls, pooled: np.ndarray, schema: dict, max_categories: int = 20, clip: float = 6.0
    ) -> FederatedPreprocessor:
        """The encoder from a pooled moments vector (see `local_moments`) and the merged schema."""
        if len(pooled) != moments_length(schema):
            raise ValueError(
                f"moments vector has {len(pooled)} entries, schema needs {moments_length(schema)}"
            )
        pos = 0
        mean, scale, indicators = [], [], []
        for column in schema["numeric"]:
            observed, m1, m2 = (float(v) for v in pooled[pos : pos + 3])
            pos += 3
            s = 2.0 ** schema["exponents"][column]
            if observed <= 0:
                mu, var = 0.0, 0.0
            else:
                mu = m1 / observed
                var = max(m2 / observed - mu * mu, 0.0)
            mean.append(mu * s)
            sd = math.sqrt(var) * s
            scale.append(sd if sd > 1e-12 * max(s, 1.0) else 1.0)  # constant column: as StandardScaler
            if observed < 1.0 - 1e-9:
                indicators.append(column)
        categorical, grouped = {}, {}
        for column in schema["categorical"]:
            levels = [*schema["levels"][column], MISSING_LEVEL]
            shares = np.asarray(pooled[pos : pos + len(levels)], dtype=np.float64)
            pos += len(levels)
            present = [(lvl, sh) for lvl, sh in zip(levels, shares, strict=True) if sh > 0]
            if len(present) > max_categories:
                # as sklearn's OneHotEncoder(max_categories=k): k-1 most frequent levels + one infrequent
                ranked = sorted(present, key=lambda t: (-t[1], t[0]))[: max_categories - 1]
                kept = sorted(lvl for lvl, _ in ranked)
                grouped[column] = True
            else:
                kept = sorted(lvl for lvl, _ in present)
                grouped[column] = False
            categorical[column] = kept
        return cls(schema["numeric"], mean, scale, indicators, categorical, grouped, clip)

    @property
    def feature_names_(self) -> list[str]:
        names = [f"num__{c}" for c in self.numeric] + [f"num__missingindicator_{c}" for c in self.indicators]
        for column, levels in self.categorical.items():
            names += [f"cat__{column}_{lvl}" for lvl in levels]
            if self.grouped.get(column):
                names.append(f"cat__{column}_{INFREQUENT_LEVEL}")
        return names

    @property
    def n_features_out_(self) -> int:
        return len(self.feature_names_)

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        """Encode a bank's rows (float32, one column per `feature_names_`)."""
        blocks = []
        if self.numeric:
            raw = features[self.numeric].to_numpy(dtype=np.float64)
            mean = np.asarray(self.mean)
            filled = np.where(np.isfinite(raw), raw, mean)
            z = np.clip((filled - mean) / np.asarray(self.scale), -self.clip, self.clip)
            blocks.append(z)
            if self.indicators:
                blocks.append(~np.isfinite(features[self.indicators].to_numpy(dtype=np.float64)))
        for column, levels in self.categorical.items():
            values = (
                features[column].astype(object).where(features[column].notna(), MISSING_LEVEL).astype(str)
            )
            codes = pd.Index(levels).get_indexer(values)
            onehot = np.zeros((len(features), len(levels) + int(self.grouped.get(column, False))))
            known = codes >= 0
            onehot[np.nonzero(known)[0], codes[known]] = 1.0
            if self.grouped.get(column):
                onehot[~known, -1] = 1.0  # unknown at transform = rare: the infrequent column, as sklearn
            blocks.append(onehot)
        if not blocks:
            return np.zeros((len(features), 0), dtype=np.float32)
        return np.hstack(blocks).astype(np.float32)

    def to_json(self) -> str:
        return json.dumps(
            {
                "numeric": self.numeric,
                "mean": self.mean,
                "scale": self.scale,
                "indicators": self.indicators,
                "categorical": self.categorical,
                "grouped": self.grouped,
                "clip": self.clip,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> FederatedPreprocessor:
        return cls(**json.loads(text))

    @property
    def digest(self) -> str:
        """Short content hash: clients key their cache of encoded rows by it."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:16]


def federated_preprocessor(
    tables: Mapping[str, pd.DataFrame], max_categories: int = 20, clip: float = 6.0
) -> FederatedPreprocessor:
    """The federated encoder computed without Flower (same per-bank vectors, same row-weighted average).

    For the siloed and pooled baselines, so that every method sees identical features. ``tables`` maps
    each bank to its *training* rows' features.
    """
    schema = merge_schemas({name: local_schema(df) for name, df in tables.items()})
    moments = [local_moments(df, schema) for df in tables.values()]
    pooled = pool_moments(moments, [len(df) for df in tables.values()])
    return FederatedPreprocessor.from_moments(pooled, schema, max_categories, clip)
