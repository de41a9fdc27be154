"""The id lists a partner is sent after PSI: in which order, and where each id sits in the partner's table."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from fedrisk.core.errors import FedriskError

_FIELD = "data.parties"


def shuffled_roster(ids: np.ndarray, partner: str, seed: int) -> np.ndarray:
    """The shared ids in the order the label holder sends them to ``partner``.

    Order hides nothing useful from the partner only if it is random; the stream is keyed by the
    partner's name so a partner's list does not depend on which other partners take part. Every
    alignment (in one process, or between nodes) orders rosters here, so they train alike.
    """
    rng = np.random.default_rng([seed, zlib.crc32(partner.encode())])
    return ids[rng.permutation(len(ids))]


def partner_rows(partner_ids: np.ndarray, requested_ids: np.ndarray) -> np.ndarray:
    """Row positions in the partner's table of the ids the label holder asks it to compute for.

    Parameters
    ----------
    partner_ids : np.ndarray
        The partner's own ids, unique, in its table's row order.
    requested_ids : np.ndarray
        The ids the label holder sent (`Alignment.shared_ids` for this partner).

    Returns
    -------
    np.ndarray
        ``int64`` positions aligned with ``requested_ids``; ``-1`` for ids the partner does not hold
        (PSI false positives, probability ``fpr`` per run). The partner drops those rows.
    """
    index = pd.Index(np.asarray(partner_ids))
    if not index.is_unique:
        raise FedriskError(_FIELD, "partner ids are not unique", "give one row per firm")
    return index.get_indexer(np.asarray(requested_ids)).astype(np.int64, copy=False)
