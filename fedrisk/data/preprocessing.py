"""Per-holder preprocessing: each holder encodes its own columns, fitted on its own rows only.

Nothing here sees another holder's data; the centralized baseline is the one place where encoded blocks
of several holders are put side by side.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


class HolderPreprocessor:
    """Impute, flag missing, standardise numerics; one-hot categoricals (scikit-learn under the hood).

    Parameters
    ----------
    max_categories : int, default=20
        Cap on one-hot levels per categorical column (rarer levels are grouped), so a province column does
        not blow up the bottom model.
    clip : float, default=6.0
        Standardised values are clipped to ``[-clip, clip]`` so heavy-tailed amounts (revenue, loan size)
        cannot dominate a gradient step.
    """

    def __init__(self, max_categories: int = 20, clip: float = 6.0) -> None:
        self.max_categories = max_categories
        self.clip = clip

    def fit(self, features: pd.DataFrame) -> HolderPreprocessor:
        numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
        categorical = [c for c in features.columns if c not in numeric]
        transformers = []
        if numeric:
            transformers.append(
                (
                    "num",
                    Pipeline(
                        [
                            (
                                "impute",
                                SimpleImputer(
                                    strategy="median", add_indicator=True, keep_empty_features=True
                                ),
                            ),
                            ("scale", StandardScaler()),
                        ]
                    ),
                    numeric,
                )
            )
        if categorical:
            transformers.append(
                (
                    "cat",
                    Pipeline(
                        [
                            ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                            (
                                "onehot",
                                OneHotEncoder(
                                    handle_unknown="infrequent_if_exist",
                                    max_categories=self.max_categories,
                                    sparse_output=False,
                                    dtype=np.float32,
                                ),
                            ),
                        ]
                    ),
                    categorical,
                )
            )
        self.numeric_columns_ = numeric
        self.categorical_columns_ = categorical
        self.transformer_ = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
        self.transformer_.fit(_as_objects(features, categorical))
        self.feature_names_ = [str(n) for n in self.transformer_.get_feature_names_out()]
        return self

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        out = self.transformer_.transform(_as_objects(features, self.categorical_columns_))
        out = np.asarray(out, dtype=np.float32)
        np.clip(out, -self.clip, self.clip, out=out)
        return out

    def fit_transform(self, features: pd.DataFrame) -> np.ndarray:
        return self.fit(features).transform(features)

    @property
    def n_features_out_(self) -> int:
        return len(self.feature_names_)


def _as_objects(features: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    """sklearn's imputer wants object columns with NaN, not pandas categoricals."""
    if not categorical:
        return features
    frame = features.copy()
    for column in categorical:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), np.nan)
    return frame
