"""Per-holder binning: each holder turns its own columns into bin codes, fitted on its own rows only.

Numeric cut points come from xgboost's quantile sketch (`QuantileDMatrix.get_quantile_cut`), so our trees
and the xgboost baselines see the same bins; a categorical column gets one bin per level (ordered by level
name) and is refused when it has more levels than `model.max_bins`. A value goes to bin
``searchsorted(thresholds, x, side="right")`` -- xgboost's rule "x < cut goes left" -- and missing values
(NaN, unseen levels) to the extra code `Binner.missing`. Thresholds never leave the holder that fitted them:
the tree builder only ever sees bin codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedrisk.core.errors import FedriskError
from fedrisk.models.gbdt.params import MAX_BINS_LIMIT


@dataclass(frozen=True)
class ColumnBins:
    """One column's binning: interior thresholds (numeric) or levels (categorical)."""

    name: str
    thresholds: np.ndarray  # float32, increasing; n_bins = len + 1
    levels: tuple[str, ...] | None = None  # categorical levels in code order, None for numeric

    @property
    def n_bins(self) -> int:
        return len(self.thresholds) + 1


class Binner:
    """A holder's fitted binning of its feature table.

    Parameters
    ----------
    max_bins : int
        Bins per column (`model.max_bins`); the missing code is `max_bins`.
    holder : str
        The holder's name, used in error messages only.
    """

    def __init__(self, max_bins: int, holder: str = "holder") -> None:
        if not 2 <= max_bins <= MAX_BINS_LIMIT:
            raise FedriskError("model.max_bins", f"{max_bins} is not in [2, {MAX_BINS_LIMIT}]")
        self.max_bins = max_bins
        self.holder = holder

    # ------------------------------------------------------------------ fitting
    def fit(self, features: pd.DataFrame, levels: dict[str, tuple[str, ...]] | None = None) -> Binner:
        """Fit cut points on this holder's training rows (`levels` pins agreed categorical levels)."""
        import xgboost  # deferred: only fitting needs the sketch

        levels = dict(levels or {})
        for column in features.columns:
            if not pd.api.types.is_numeric_dtype(features[column]) and column not in levels:
                levels[column] = tuple(sorted({str(v) for v in features[column].dropna()}))
        for column, lv in levels.items():
            if len(lv) > self.max_bins:
                raise FedriskError(
                    "model.max_bins",
                    f"categorical column '{column}' of {self.holder} has {len(lv)} levels, more than "
                    f"model.max_bins = {self.max_bins}",
                    f"set model.max_bins >= {len(lv)} or group rare levels of '{column}' before training",
                )
        self.columns_ = list(features.columns)
        self._levels = dict(levels)
        encoded = self.encode(features)
        if encoded.shape[1] == 0:
            self.bins_ = []
            return self
        matrix = xgboost.QuantileDMatrix(encoded, max_bin=self.max_bins, nthread=1)
        ptr, values = matrix.get_quantile_cut()
        ptr = np.asarray(ptr)
        values = np.asarray(values, dtype=np.float32)
        bins = []
        for j, column in enumerate(self.columns_):
            # xgboost lists [min value, cut_1, ..., cut_k] per column; cut_k lies above the maximum, so the
            # interior thresholds are cut_1 .. cut_{k-1} (k bins).
            cuts = values[ptr[j] + 1 : ptr[j + 1]]
            bins.append(ColumnBins(column, cuts[:-1].copy(), self._levels.get(column)))
        self.bins_ = bins
        return self

    @classmethod
    def from_columns(cls, bins: list[ColumnBins], max_bins: int, holder: str = "holder") -> Binner:
        """A binner with given thresholds (horizontal federation: cuts agreed across banks)."""
        binner = cls(max_bins, holder)
        binner.columns_ = [b.name for b in bins]
        binner._levels = {b.name: b.levels for b in bins if b.levels is not None}
        binner.bins_ = list(bins)
        for b in bins:
            if b.n_bins > max_bins:
                raise FedriskError("model.max_bins", f"column '{b.name}' has {b.n_bins} bins > {max_bins}")
        return binner

    def to_dict(self) -> dict:
        """JSON-able bins (thresholds and levels): what horizontal banks agree on and a model keeps."""
        return {
            "max_bins": self.max_bins,
            "holder": self.holder,
            "columns": [
                {"name": str(b.name), "thresholds": b.thresholds.astype(float).tolist(), "levels": b.levels}
                for b in self.bins_
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Binner:
        bins = [
            ColumnBins(
                c["name"],
                np.asarray(c["thresholds"], dtype=np.float32),
                None if c["levels"] is None else tuple(c["levels"]),
            )
            for c in data["columns"]
        ]
        return cls.from_columns(bins, int(data["max_bins"]), data.get("holder", "holder"))

    # ------------------------------------------------------------------ use
    @property
    def missing(self) -> int:
        """The bin code of a missing value."""
        return self.max_bins

    @property
    def n_features(self) -> int:
        return len(self.columns_)

    @property
    def n_bins(self) -> np.ndarray:
        """Bins per column (without the missing code)."""
        return np.array([b.n_bins for b in self.bins_], dtype=np.int32)

    def encode(self, features: pd.DataFrame) -> np.ndarray:
        """Numeric matrix (float32, NaN = missing): categoricals as level codes. What xgboost baselines see."""
        self._check_columns(features)
        out = np.empty((len(features), len(self.columns_)), dtype=np.float32)
        for j, column in enumerate(self.columns_):
            values = features[column]
            if column in self._levels:
                codes = pd.Index(self._levels[column]).get_indexer(values.astype(object).astype(str))
                out[:, j] = np.where((codes < 0) | values.isna().to_numpy(), np.nan, codes)
            else:
                out[:, j] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        out[~np.isfinite(out)] = np.nan
        return out

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        """Bin codes, shape (rows, columns), uint16; `missing` marks NaN and unseen levels."""
        return self.transform_encoded(self.encode(features))

    def encode_rows(self, features: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """`encode` of the table rows at `rows` (positions; -1 = a firm this holder does not have -> all NaN).

        How a holder lines its table up with the label holder's applicants: absent firms are missing values,
        which the trees route by their learned default direction.
        """
        rows = np.asarray(rows)
        out = np.full((len(rows), len(self.columns_)), np.nan, dtype=np.float32)
        present = rows >= 0
        if present.any():
            out[present] = self.encode(features.iloc[rows[present]])
        return out

    def transform_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Bin codes of an already `encode`d matrix."""
        codes = np.empty(encoded.shape, dtype=np.uint16)
        for j, column_bins in enumerate(self.bins_):
            x = encoded[:, j]
            codes[:, j] = np.searchsorted(column_bins.thresholds, x, side="right")
            codes[np.isnan(x), j] = self.missing
        return codes

    def _check_columns(self, features: pd.DataFrame) -> None:
        missing = [c for c in self.columns_ if c not in features.columns]
        if missing:
            raise FedriskError(
                f"parties.{self.holder}",
                f"columns {missing} seen at fit time are absent",
                "give the same columns",
            )
