"""Which applicants each vertical holder knows, and every holder's encoded rows as the pooled twin builds them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedrisk.data.preprocessing import HolderPreprocessor
from fedrisk.data.table import PartyTable


@dataclass
class Coverage:
    """Which applicants a holder knows: ``pos[i]`` = row of applicant ``i`` in the holder's roster, or -1."""

    pos: np.ndarray

    def select(self, applicants: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Roster rows (int32) for ``applicants`` and their batch positions (None when all are covered)."""
        sel = self.pos[applicants]
        covered = sel >= 0
        if covered.all():
            return sel.astype(np.int32), None
        where = np.flatnonzero(covered)
        return sel[where].astype(np.int32), where


@dataclass
class VerticalBlocks:
    """Every holder's encoded rows for a list of applicants, in roster order, and the coverage maps.

    ``blocks[h]`` holds holder ``h``'s rows for the applicants it knows, in applicant order (its roster);
    ``coverage[h].pos[i]`` is applicant ``i``'s row in ``blocks[h]`` or -1.
    """

    blocks: dict[str, np.ndarray]
    coverage: dict[str, Coverage]

    @property
    def n_features(self) -> dict[str, int]:
        return {h: b.shape[1] for h, b in self.blocks.items()}


def vertical_blocks(
    parties: Mapping[str, PartyTable],
    label_holder: str,
    applicants: np.ndarray,
    fit_applicants: np.ndarray,
    partner_preps: Mapping[str, HolderPreprocessor] | None = None,
) -> VerticalBlocks:
    """Encode every holder as the pooled twin does (and the audits that replay it).

    The label holder's preprocessing is fitted on ``fit_applicants`` (its training rows); a partner's on
    its whole table (no labels involved), unless ``partner_preps`` gives it already fitted.
    """
    blocks, coverage = {}, {}
    for name, table in parties.items():
        pos = pd.Index(table.ids).get_indexer(applicants)
        rows = pos[pos >= 0]
        if name == label_holder:
            fit_pos = pd.Index(table.ids).get_indexer(fit_applicants)
            prep = HolderPreprocessor().fit(table.features.iloc[fit_pos])
        elif partner_preps is not None and name in partner_preps:
            prep = partner_preps[name]
        else:
            prep = HolderPreprocessor().fit(table.features)
        blocks[name] = prep.transform(table.features.iloc[rows])
        roster = np.full(len(applicants), -1, dtype=np.int64)
        roster[pos >= 0] = np.arange(len(rows))
        coverage[name] = Coverage(roster)
    return VerticalBlocks(blocks, coverage)
