"""The label holder's split of its applicants into train / validation / test (and out-of-time).

Every method is scored on the same test applicants; hyper-parameters and early stopping see only the
validation rows.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from fedrisk.core.errors import FedriskError
from fedrisk.data.table import PartyTable


def split_applicants(
    table: PartyTable, test_fraction: float, val_fraction: float, seed: int, out_of_time: bool = True
) -> dict[str, np.ndarray]:
    """Stratified split of a label holder's ids: ``{"train", "val", "test"}`` (+ ``"oot"``: later cohort)."""
    if table.label is None:
        raise FedriskError(
            f"data.parties.{table.name}.label", "this party has no label", "name its label column"
        )
    positions = np.arange(table.n_rows)
    later = np.zeros(table.n_rows, dtype=bool)
    if out_of_time and table.cohort is not None:
        later = table.cohort.astype(bool)
    development = positions[~later]
    y = table.label[development]
    n_bad = int(y.sum())
    if n_bad < 10 or n_bad > len(y) - 10:
        raise FedriskError(
            f"data.parties.{table.name}.label",
            f"{n_bad} defaults among {len(y)} applicants: too few of one class to train and test",
            "use more applicants or a higher default rate",
        )
    rest, test = train_test_split(development, test_size=test_fraction, stratify=y, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_fraction, stratify=table.label[rest], random_state=seed + 1
    )
    splits = {
        "train": table.ids[np.sort(train)],
        "val": table.ids[np.sort(val)],
        "test": table.ids[np.sort(test)],
    }
    if later.any():
        splits["oot"] = table.ids[positions[later]]
    return splits
