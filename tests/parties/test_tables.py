"""Real tables: each bad input ends in one FedriskError naming the party and column."""

import numpy as np
import pandas as pd
import pytest

from fedrisk.core.errors import FedriskError, FedriskWarning
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


# --- IDs are text; missing tokens; repeated column names ---------------------------------------------------


def test_csv_ids_are_text_not_numbers(tmp_path):
    """'0000123' and '123' are two firms, and so are '7' and '007' (pandas would read both pairs as one)."""
    ids = ["0000123", "123", "007", "7"] + [str(1000 + i) for i in range(46)]  # all digits
    frame(firm_id=ids).to_csv(tmp_path / "bank.csv", index=False)
    bank = load_tables([Src("bank", tmp_path / "bank.csv", label="default")])["bank"]
    assert bank.ids[:4].tolist() == ["0000123", "123", "007", "7"]


def test_parquet_integer_ids_become_their_digits(tmp_path):
    frame(firm_id=np.arange(100, 150)).to_parquet(tmp_path / "bank.parquet")
    with_gap = frame().drop(columns="default").assign(firm_id=[float(i) for i in range(100, 149)] + [np.nan])
    with_gap.iloc[:49].to_parquet(tmp_path / "tax.parquet")  # integers stored as floats
    tables = load_tables(
        [Src("bank", tmp_path / "bank.parquet", label="default"), Src("tax", tmp_path / "tax.parquet")]
    )
    assert tables["bank"].ids[0] == "100" and tables["tax"].ids[0] == "100"


def test_ids_are_stripped_alike_at_every_party(tmp_path):
    frame(firm_id=[f" F{i} " for i in range(50)]).to_csv(tmp_path / "bank.csv", index=False)
    frame().drop(columns="default").assign(firm_id=[f"F{i}\t" for i in range(50)]).to_parquet(
        tmp_path / "tax.parquet"
    )
    tables = load_tables(
        [Src("bank", tmp_path / "bank.csv", label="default"), Src("tax", tmp_path / "tax.parquet")]
    )
    assert tables["bank"].ids.tolist() == tables["tax"].ids.tolist() == [f"F{i}" for i in range(50)]


def test_ids_that_differ_only_by_whitespace_are_duplicates(tmp_path):
    frame(firm_id=["F1", " F1"] + [f"G{i}" for i in range(48)]).to_csv(tmp_path / "bank.csv", index=False)
    with pytest.raises(FedriskError, match="1 duplicate ids .*'F1'"):
        load_tables([Src("bank", tmp_path / "bank.csv", label="default")])


TOKENS = ["n/a", "NA", "null", "-", "?", " N/A "]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_missing_tokens_leave_a_numeric_column_numeric_and_are_counted(tmp_path, suffix):
    x = [str(float(i)) for i in range(50)]
    x[: len(TOKENS)] = TOKENS
    x[10] = ""  # a blank cell is a plain missing value, not a token
    f = frame(x=x)
    (f.to_csv if suffix == "csv" else f.to_parquet)(tmp_path / f"bank.{suffix}", index=False)
    with pytest.warns(FedriskWarning, match=r"data\.parties\.bank: 6 cells .*'-', '\?', 'n/a', 'na', 'null'"):
        bank = load_tables([Src("bank", tmp_path / f"bank.{suffix}", label="default")])["bank"]
    column = bank.features["x"]
    assert column.dtype == np.float64 and bank.numeric_columns() == ["x"]
    assert column.isna().sum() == 7 and column.iloc[11] == 11.0


def test_text_column_without_tokens_keeps_its_type(tmp_path):
    frame(code=[f"{i % 3:03d}" for i in range(50)]).to_parquet(tmp_path / "bank.parquet")
    bank = load_tables([Src("bank", tmp_path / "bank.parquet", label="default")])["bank"]
    assert bank.categorical_columns() == ["code"]


def test_a_missing_token_label_is_a_missing_label(tmp_path):
    frame(default=["NA"] + [i % 2 for i in range(1, 50)]).to_csv(tmp_path / "bank.csv", index=False)
    with pytest.raises(FedriskError, match="1 missing labels"):
        load_tables([Src("bank", tmp_path / "bank.csv", label="default")])


def test_a_missing_token_id_is_a_missing_id(tmp_path):
    frame(firm_id=["n/a"] + [f"F{i}" for i in range(1, 50)]).to_csv(tmp_path / "bank.csv", index=False)
    with pytest.raises(FedriskError, match="1 rows have no id"):
        load_tables([Src("bank", tmp_path / "bank.csv", label="default")])


def test_repeated_column_names_are_an_error(tmp_path):
    (tmp_path / "bank.csv").write_text("firm_id,x,x,default\nF1,1,2,0\nF2,3,4,1\n")
    with pytest.raises(FedriskError, match=r"bank\.path: column 'x' appears 2 times in bank\.csv"):
        load_tables([Src("bank", tmp_path / "bank.csv", label="default")])
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        [pa.array(["F1", "F2"]), pa.array([1, 2]), pa.array([3, 4])], names=["firm_id", "x", "x"]
    )
    pq.write_table(table, tmp_path / "tax.parquet")
    with pytest.raises(FedriskError, match="column 'x' appears 2 times in tax.parquet"):
        load_tables([Src("tax", tmp_path / "tax.parquet")])
