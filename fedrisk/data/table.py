"""One data holder's table: the only data a party's code may touch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedrisk.core.errors import FedriskError


@dataclass(frozen=True)
class PartyTable:
    """A holder's rows: unique IDs, feature columns, and (for a label holder) a binary label.

    Parameters
    ----------
    name : str
        The holder's name (``"bank"``, ``"bank_3"``, ``"tax"``, ``"supply_chain"``, or a table's name).
    ids : np.ndarray
        Firm identifiers (strings), unique, one per row.
    features : pd.DataFrame
        Feature columns only (no id, no label), ``RangeIndex`` aligned with ``ids``. Numeric columns are
        floats (NaN = missing); categorical columns have pandas ``category`` or ``object`` dtype.
    label : np.ndarray or None
        ``int8`` 0/1 outcome (``default_12m``) for label holders, else None.
    cohort : np.ndarray or None
        ``int8`` application cohort: 0 = development window, 1 = out-of-time window. None = all 0.
    approved : np.ndarray or None
        ``int8`` 1 where the bank's past credit policy approved the applicant (its outcome would be observed
        in a real portfolio); used by ``split.accepted_only``. None = not recorded.
    """

    name: str
    ids: np.ndarray
    features: pd.DataFrame
    label: np.ndarray | None = None
    cohort: np.ndarray | None = None
    approved: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.features) != n:
            raise FedriskError(
                f"parties.{self.name}",
                f"{len(self.features)} feature rows but {n} ids",
                "give one id per row",
            )
        if self.label is not None and len(self.label) != n:
            raise FedriskError(f"parties.{self.name}.label", f"{len(self.label)} labels for {n} rows")
        if self.cohort is not None and len(self.cohort) != n:
            raise FedriskError(f"parties.{self.name}.cohort", f"{len(self.cohort)} cohorts for {n} rows")
        if self.approved is not None and len(self.approved) != n:
            raise FedriskError(
                f"parties.{self.name}.approved", f"{len(self.approved)} decisions for {n} rows"
            )

    @property
    def has_label(self) -> bool:
        return self.label is not None

    @property
    def n_rows(self) -> int:
        return len(self.ids)

    def numeric_columns(self) -> list[str]:
        return [c for c in self.features.columns if pd.api.types.is_numeric_dtype(self.features[c])]

    def categorical_columns(self) -> list[str]:
        return [c for c in self.features.columns if not pd.api.types.is_numeric_dtype(self.features[c])]

    def take(self, rows: np.ndarray) -> PartyTable:
        """The sub-table at integer positions ``rows`` (the holder's own operation, on its own rows)."""
        return PartyTable(
            name=self.name,
            ids=self.ids[rows],
            features=self.features.iloc[rows].reset_index(drop=True),
            label=None if self.label is None else self.label[rows],
            cohort=None if self.cohort is None else self.cohort[rows],
            approved=None if self.approved is None else self.approved[rows],
            meta=dict(self.meta),
        )
