"""Real tables: each bad input ends in one FedriskError naming the party and column."""

import numpy as np
import pandas as pd
import pytest

from fedrisk.core.errors import FedriskError
from fedrisk.data.tables import load_tables


class Src:
    def __init__(self, name, path, id="firm_id", label=None):
        self.name, self.path, self.id, self.label = name, path, id, label


def frame(n=50, **extra):
    data = {
        "firm_id": [f"F{i}" for i in range(n)],
        "x": np.arange(n, dtype=float),
        "default": [i % 2 for i in range(n)],
    }
    data.update(extra)
    return pd.DataFrame(data)


def test_reads_csv_and_parquet_with_types(tmp_path):
    f = frame(cat=["a", "b"] * 25)
    f.to_csv(tmp_path / "bank.csv", index=False)
    f.drop(columns="default").to_parquet(tmp_path / "tax.parquet")
    tables = load_tables(
        [Src("bank", tmp_path / "bank.csv", label="default"), Src("tax", tmp_path / "tax.parquet")]
    )
    bank = tables["bank"]
    assert bank.label.tolist() == [i % 2 for i in range(50)]
    assert list(bank.features.columns) == ["x", "cat"]
    assert str(bank.features["cat"].dtype) == "category"
    assert tables["tax"].label is None and "default" not in tables["tax"].features


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.assign(default=[2] * 50), "label must be binary"),
        (lambda f: f.assign(default=[np.nan] + [0] * 49), "missing labels"),
        (lambda f: f.assign(firm_id=["A"] * 50), "duplicate ids"),
        (lambda f: f.rename(columns={"firm_id": "id"}), "column 'firm_id' not in the table"),
        (lambda f: f.rename(columns={"default": "y"}), "column 'default' not in the table"),
        (lambda f: f[["firm_id", "default"]], "no feature columns"),
        (lambda f: f.assign(x=[np.inf] * 50), "infinite"),
        (lambda f: f.iloc[:0], "no rows"),
    ],
)
def test_bad_tables(tmp_path, mutate, message):
    mutate(frame()).to_csv(tmp_path / "bank.csv", index=False)
    with pytest.raises(FedriskError, match=message) as info:
        load_tables([Src("bank", tmp_path / "bank.csv", label="default")])
    assert "data.parties.bank" in str(info.value) or "column" in str(info.value)


def test_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(FedriskError, match="file not found"):
        load_tables([Src("bank", tmp_path / "bank.csv", label="default")])
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(FedriskError, match="is empty"):
        load_tables([Src("bank", tmp_path / "empty.csv")])
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(FedriskError, match="unsupported file type"):
        load_tables([Src("bank", tmp_path / "x.xlsx")])
