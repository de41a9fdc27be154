"""Malformed configs and tables through the CLI: one line on stderr, no traceback, non-zero exit, no results.

Each case builds its inputs in a fresh directory and runs `fedrisk.cli.main` in this process (sys.argv
patched, stderr captured at the file-descriptor level, warnings counted as lines because the real CLI prints
them); two cases also run as a real subprocess. Unicode IDs are legal and must give a complete run.
The hypothesis tests throw random ``--set`` overrides and random tables at the loaders: every input either
validates or raises `FedriskError` with a one-line message.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import fedrisk.cli as cli
from fedrisk.config.experiment import ExperimentConfig, load_config
from fedrisk.core.errors import FedriskError
from fedrisk.data.tables import read_frame, table_from_frame

ROOT = Path(__file__).resolve().parents[1]
FAST = "seeds = [0]\n[runner]\nworkers = 1\n[evaluation]\nn_bootstrap = 0\n[training]\nepochs = 2\n"

# --------------------------------------------------------------------------------------------------------
# Building inputs

Builder = Callable[[Path], list[str]]
CASES: dict[str, Builder] = {}


def case(fn: Builder) -> Builder:
    CASES[fn.__name__] = fn
    return fn


def run_args(d: Path, text: str, *extra: str) -> list[str]:
    path = d / "c.toml"
    path.write_text(text, encoding="utf-8")
    return ["run", str(path), "--out", str(d / "out"), "--quiet", "--no-report", *extra]


def bank(n: int = 400, seed: int = 0, ids: list[str] | None = None, rate: float = 0.2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "firm_id": ids if ids is not None else [f"F{i}" for i in range(n)],
            "x": rng.normal(size=n),
            "sector": rng.choice(["a", "b"], n),
            "default": (rng.random(n) < rate).astype(int),
        }
    )


def tax(n: int = 400, ids: list[str] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {"firm_id": ids if ids is not None else [f"F{i}" for i in range(n)], "rev": rng.normal(size=n)}
    )


def tables(d: Path, parties: dict, topology: str | None = None, extra: str = "") -> list[str]:
    """A config with ``[[data.parties]]`` entries: ``name -> (DataFrame | bytes | "dir", file name, label)``."""
    text = (f'topology = "{topology}"\n' if topology else "") + FAST + '[data]\nsource = "tables"\n'
    for name, (content, file_name, label) in parties.items():
        path = d / file_name
        if isinstance(content, pd.DataFrame):
            if file_name.endswith(".csv"):
                content.to_csv(path, index=False)
            else:
                content.to_parquet(path, index=False)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.mkdir()
        text += f'[[data.parties]]\nname = "{name}"\npath = "{file_name}"\nid = "firm_id"\n'
        text += f'label = "{label}"\n' if label else ""
    return run_args(d, text + extra)


def vertical(d: Path, bank_frame: pd.DataFrame, file_name: str = "bank.csv", **kw) -> list[str]:
    return tables(d, {"bank": (bank_frame, file_name, "default"), "tax": (tax(), "tax.csv", None)}, **kw)


def with_value(column: str, row: int, value) -> pd.DataFrame:
    frame = bank()
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


GARBAGE = bytes(range(256)) * 8

# --- config files and keys ---------------------------------------------------------------------------


@case
def config_missing(d):
    return ["run", str(d / "nope.toml"), "--out", str(d / "out")]


@case
def config_is_a_directory(d):
    (d / "c.toml").mkdir()
    return ["run", str(d / "c.toml"), "--out", str(d / "out")]


@case
def config_binary_garbage(d):
    (d / "c.toml").write_bytes(GARBAGE)
    return ["run", str(d / "c.toml"), "--out", str(d / "out")]


@case
def config_not_toml(d):
    return run_args(d, "this is [not toml\n")


@case
def config_utf8_bom(d):
    (d / "c.toml").write_bytes(b"\xef\xbb\xbfseeds = [0]\n")
    return ["run", str(d / "c.toml"), "--out", str(d / "out")]


@case
def unknown_top_level_key(d):
    return run_args(d, "bogus = 1\n")


@case
def unknown_section_key(d):
    return run_args(d, "[world]\nbogus = 1\n")


@case
def unknown_deep_key(d):
    return run_args(d, "[federation.horizontal.secagg]\nbogus = 1\n")


@case
def seeds_a_string(d):
    return run_args(d, 'seeds = "abc"\n')


@case
def seeds_empty(d):
    return run_args(d, "seeds = []\n")


@case
def seeds_duplicated(d):
    return run_args(d, "seeds = [1, 1]\n")


@case
def seeds_negative(d):
    return run_args(d, "seeds = [-1]\n")


@case
def seeds_beyond_numpy(d):
    return run_args(d, "seeds = [99999999999999999]\n")


@case
def n_firms_a_word(d):
    return run_args(d, '[world]\nn_firms = "many"\n')


@case
def n_firms_negative(d):
    return run_args(d, "[world]\nn_firms = -5\n")


@case
def n_firms_huge(d):
    return run_args(d, "[world]\nn_firms = 1e30\n")


@case
def n_banks_zero(d):
    return run_args(d, "[world]\nn_banks = 0\n")


@case
def batch_size_zero(d):
    return run_args(d, "[training]\nbatch_size = 0\n")


@case
def lr_nan(d):
    return run_args(d, "[training]\nlr = nan\n")


@case
def lr_infinite(d):
    return run_args(d, "[training]\nlr = inf\n")


@case
def split_fraction_nan(d):
    return run_args(d, "[split]\ntest_fraction = nan\n")


@case
def approval_rate_zero(d):
    return run_args(d, "[evaluation]\napproval_rate = 0\n")


@case
def section_given_a_value(d):
    return run_args(d, "world = 3\n")


@case
def section_given_a_list(d):
    return run_args(d, "world = [1, 2]\n")


@case
def unknown_model_kind(d):
    return run_args(d, '[model]\nkind = "xgboost"\n')


@case
def negative_hidden_width(d):
    return run_args(d, FAST + '[model]\nkind = "mlp"\nhidden = [-3]\n')


@case
def unknown_strategy(d):
    return run_args(d, '[federation.horizontal]\nstrategy = "nope"\n')


@case
def unknown_strategy_parameter(d):
    return run_args(
        d, '[federation.horizontal]\nstrategy = "fedprox"\n[federation.horizontal.strategy_params]\nmu = 1\n'
    )


@case
def secagg_even_shares(d):
    return run_args(d, "[federation.horizontal.secagg]\nenabled = true\nnum_shares = 4\n")


@case
def dp_without_noise(d):
    return run_args(d, '[federation.horizontal.dp]\nmode = "server-fixed"\n')


@case
def unknown_backend(d):
    return run_args(d, '[federation]\nbackend = "mpi"\n')


@case
def unknown_topology(d):
    return run_args(d, 'topology = "diagonal"\n')


@case
def sweep_not_a_table(d):
    return run_args(d, "sweep = 5\n")


@case
def sweep_empty_list(d):
    return run_args(d, '[sweep]\n"world.n_firms" = []\n')


@case
def sweep_bad_value(d):
    return run_args(d, '[sweep]\n"world.n_firms" = [10, "x"]\n')


@case
def sweep_unknown_key(d):
    return run_args(d, '[sweep]\n"world.bogus" = [1, 2]\n')


@case
def sweep_seeds(d):
    return run_args(d, '[sweep]\n"seeds" = [[0], [1]]\n')


@case
def sweep_value_not_a_list(d):
    return run_args(d, '[sweep]\n"world.n_firms" = 5000\n')


@case
def set_without_equals(d):
    return run_args(d, "", "--set", "worldn_firms")


@case
def set_empty_key(d):
    return run_args(d, "", "--set", "=5")


@case
def set_through_a_value(d):
    return run_args(d, "", "--set", "world.n_firms.x=3")


@case
def set_unknown_key(d):
    return run_args(d, "", "--set", "world.bogus=3")


@case
def set_wrong_type(d):
    return run_args(d, "", "--set", "training.epochs=many")


@case
def out_is_a_file(d):
    (d / "out").write_text("x")
    return run_args(d, FAST)


@case
def out_not_empty(d):
    (d / "out").mkdir()
    (d / "out" / "notes.txt").write_text("x")
    return run_args(d, FAST)


@case
def out_under_a_file(d):
    (d / "file").write_text("x")
    return [*run_args(d, FAST)[:2], "--out", str(d / "file" / "run"), "--quiet", "--no-report"]


@case
def out_not_writable(d):
    return [*run_args(d, FAST)[:2], "--out", "/sys/fedrisk-results", "--quiet", "--no-report"]


@case
def out_run_json_damaged(d):
    (d / "out").mkdir()
    (d / "out" / "run.json").write_text('{"fingerprint": ')
    return run_args(d, FAST)


@case
def force_with_user_files_in_out(d):
    (d / "out" / "units").mkdir(parents=True)
    (d / "out" / "run.json").write_text("{}")
    (d / "out" / "results.json").write_text('{"complete": false}')
    (d / "out" / "thesis.tex").write_text("years of work")
    return run_args(d, FAST, "--force")


@case
def unknown_partner(d):
    return run_args(d, FAST + '[data]\npartners = ["irs"]\n[world]\nn_firms = 3000\n')


@case
def unknown_partner_nobody(d):
    return run_args(d, FAST + '[data]\npartners = ["nobody"]\n')


@case
def unknown_partner_in_a_sweep(d):
    return run_args(d, FAST + '[sweep]\n"data.partners" = [["tax"], ["nobody"]]\n')


@case
def weight_decay_infinite(d):
    return run_args(d, FAST + "weight_decay = inf\n")


@case
def min_overlap_zero(d):
    return run_args(d, FAST + "[data]\nmin_overlap = 0\n")


@case
def audit_unknown_key(d):
    return run_args(d, "[audit.robustness]\nbogus = 1\n")


@case
def audit_unknown_attack(d):
    return run_args(d, '[audit.robustness]\nattack = "bribe"\n')


@case
def audit_gap_group_not_grouped(d):
    return run_args(d, '[audit.fairness]\ngroups = ["sector"]\n')


# --- tables ----------------------------------------------------------------------------------------------


@case
def tables_without_parties(d):
    return run_args(d, '[data]\nsource = "tables"\n')


@case
def table_file_missing(d):
    return run_args(
        d,
        FAST
        + '[data]\nsource = "tables"\n[[data.parties]]\nname = "bank"\npath = "nope.csv"\nlabel = "default"\n',
    )


@case
def table_path_is_a_directory(d):
    return tables(d, {"bank": ("dir", "bank.csv", "default")})


@case
def table_empty_file(d):
    return tables(d, {"bank": (b"", "bank.csv", "default")})


@case
def table_header_only(d):
    return tables(d, {"bank": (b"firm_id,x,default\n", "bank.csv", "default")})


@case
def table_binary_garbage_csv(d):
    return vertical(d, GARBAGE)  # type: ignore[arg-type]


@case
def table_binary_garbage_parquet(d):
    return vertical(d, GARBAGE, "bank.parquet")  # type: ignore[arg-type]


@case
def table_ragged_csv(d):
    return vertical(d, b"firm_id,x,default\nF1,1,0\nF2,2,1,9,9\n")  # type: ignore[arg-type]


@case
def table_unsupported_extension(d):
    return tables(d, {"bank": (b"x", "bank.xlsx", "default")})


@case
def table_duplicate_party_names(d):
    return tables(
        d,
        {"bank": (bank(), "bank.csv", "default")},
        extra='[[data.parties]]\nname = "bank"\npath = "bank.csv"\n',
    )


@case
def table_without_id_column(d):
    return vertical(d, bank().rename(columns={"firm_id": "id"}))


@case
def table_without_label_column(d):
    return vertical(d, bank().drop(columns="default"))


@case
def table_nan_label(d):
    return vertical(d, with_value("default", 3, np.nan))


@case
def table_label_two(d):
    return vertical(d, with_value("default", 3, 2))


@case
def table_label_words(d):
    frame = bank()
    frame["default"] = np.where(frame["default"] == 1, "yes", "no")
    return vertical(d, frame)


@case
def table_label_fractional(d):
    frame = bank()
    frame["default"] = frame["default"] + 0.5
    return vertical(d, frame)


@case
def table_label_all_one_class(d):
    frame = bank()
    frame["default"] = 0
    return vertical(d, frame)


@case
def table_label_is_the_id(d):
    return tables(d, {"bank": (bank(), "bank.csv", "firm_id"), "tax": (tax(), "tax.csv", None)})


@case
def table_duplicate_ids(d):
    return vertical(d, with_value("firm_id", 5, "F0"))


@case
def table_missing_id(d):
    return vertical(d, with_value("firm_id", 5, None))


@case
def table_infinite_feature(d):
    return vertical(d, with_value("x", 5, np.inf).astype({"x": float}), "bank.parquet")


@case
def table_huge_feature(d):
    frame = bank()
    frame["x"] = frame["x"] * 1e300
    return vertical(d, frame, "bank.parquet")


@case
def table_only_feature_all_missing(d):
    frame = bank()[["firm_id", "x", "default"]]
    frame["x"] = np.nan
    return vertical(d, frame)


@case
def table_no_feature_columns(d):
    return vertical(d, bank()[["firm_id", "default"]])


@case
def table_no_label_anywhere(d):
    return tables(d, {"bank": (bank(), "bank.csv", None), "tax": (tax(), "tax.csv", None)})


@case
def table_vertical_without_partner(d):
    return tables(d, {"bank": (bank(), "bank.csv", "default")})


@case
def table_too_few_applicants(d):
    return vertical(d, bank(20))


@case
def table_two_label_holders_declared_vertical(d):
    parties = {"bank": (bank(), "bank.csv", "default"), "bank2": (bank(seed=3), "bank2.csv", "default")}
    return tables(d, parties, topology="vertical")


@case
def table_one_bank_declared_horizontal(d):
    return tables(
        d, {"bank": (bank(), "bank.csv", "default"), "tax": (tax(), "tax.csv", None)}, topology="horizontal"
    )


@case
def tables_banks_with_different_columns(d):
    other = bank(seed=3).rename(columns={"x": "y"})
    return tables(d, {"bank_1": (bank(), "b1.csv", "default"), "bank_2": (other, "b2.csv", "default")})


@case
def tables_banks_with_different_types(d):
    other = bank(seed=3)
    other["x"] = np.where(other["x"] > 0, "hi", "lo")
    parties = {"bank_1": (bank(), "b1.csv", "default"), "bank_2": (other, "b2.csv", "default")}
    return tables(d, parties, extra="[federation.horizontal]\nrounds = 1\n")


@case
def table_partner_shares_no_id(d):
    parties = {
        "bank": (bank(), "bank.csv", "default"),
        "tax": (tax(ids=[f"Z{i}" for i in range(400)]), "tax.csv", None),
    }
    return tables(d, parties)


@case
def table_unknown_partner(d):
    return [*vertical(d, bank()), "--set", 'data.partners=["nobody"]']


@case
def table_repeated_column_csv(d):
    return vertical(d, b"firm_id,x,x,default\nF1,1,2,0\nF2,3,4,1\n")  # type: ignore[arg-type]


@case
def table_repeated_column_parquet(d):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [pa.array([f"F{i}" for i in range(400)]), pa.array(range(400)), pa.array(range(400))]
    pq.write_table(pa.table(columns, names=["firm_id", "rev", "rev"]), d / "tax.parquet")
    parties = {"bank": (bank(), "bank.csv", "default"), "tax": (b"", "unused.csv", None)}
    argv = tables(d, parties)
    (d / "c.toml").write_text((d / "c.toml").read_text().replace("unused.csv", "tax.parquet"))
    return argv


@case
def table_ids_equal_once_stripped(d):
    return vertical(d, with_value("firm_id", 5, " F0 "))


@case
def table_ids_differ_by_leading_zeros(d):
    # "000001" and "1" are different firms: nothing is shared (pandas used to read both as 1)
    parties = {
        "bank": (bank(ids=[f"{i:06d}" for i in range(400)]), "bank.csv", "default"),
        "tax": (tax(ids=[str(i) for i in range(400)]), "tax.csv", None),
    }
    return tables(d, parties)


@case
def table_overlap_below_min_overlap(d):
    parties = {
        "bank": (bank(), "bank.csv", "default"),
        "tax": (tax(ids=[f"F{i}" for i in range(50)] + [f"Z{i}" for i in range(350)]), "tax.csv", None),
    }
    return tables(d, parties)


@case
def audit_half_the_banks_poisoned(d):
    # fails after the methods ran: the run must still not claim to be complete
    parties = {"bank_1": (bank(), "b1.csv", "default"), "bank_2": (bank(seed=3), "b2.csv", "default")}
    extra = "[federation.horizontal]\nrounds = 1\n[audit.robustness]\nenabled = true\ndropout_fraction = 0\nstrategies = ['fedavg']\n"
    return tables(d, parties, extra=extra)


# --- the other commands ----------------------------------------------------------------------------------


@case
def generate_unknown_format(d):
    (d / "c.toml").write_text("[world]\nn_firms = 1000\n")
    return ["generate", str(d / "c.toml"), "--out", str(d / "w"), "--format", "xlsx"]


@case
def generate_negative_seed(d):
    (d / "c.toml").write_text("[world]\nn_firms = 1000\n")
    return ["generate", str(d / "c.toml"), "--out", str(d / "w"), "--seed", "-1"]


@case
def generate_out_is_a_file(d):
    (d / "c.toml").write_text("[world]\nn_firms = 1000\n")
    (d / "w").write_text("x")
    return ["generate", str(d / "c.toml"), "--out", str(d / "w")]


@case
def report_missing_directory(d):
    return ["report", str(d / "nope")]


@case
def report_not_a_results_directory(d):
    (d / "r").mkdir()
    return ["report", str(d / "r")]


@case
def report_corrupt_results(d):
    (d / "r").mkdir()
    (d / "r" / "run.json").write_text('{"config": {}}')
    (d / "r" / "results.json").write_text("{not json")
    return ["report", str(d / "r")]


@case
def report_on_a_file(d):
    (d / "r").write_text("x")
    return ["report", str(d / "r")]


@case
def missing_argument(d):
    return ["run"]


@case
def unknown_option(d):
    (d / "c.toml").write_text("")
    return ["run", str(d / "c.toml"), "--bogus"]


# --------------------------------------------------------------------------------------------------------
# Running them


def run_cli(argv: list[str], capfd, monkeypatch) -> tuple[int, str, list[str]]:
    """Exit code, stderr + stdout (file-descriptor level) and warnings of one in-process `fedrisk` call.

    Only stderr lines are counted; stdout joins them for the traceback check."""
    monkeypatch.setattr(sys, "argv", ["fedrisk", *argv])
    capfd.readouterr()
    code = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    captured = capfd.readouterr()
    shown = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if not issubclass(w.category, DeprecationWarning)
    ]
    return code, captured.err, shown + (["Traceback on stdout"] if "Traceback" in captured.out else [])


def complete_results(root: Path) -> list[Path]:
    return [p for p in root.rglob("results.json") if _complete(p)]


def _complete(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("complete"))
    except (ValueError, OSError):
        return False


def test_there_are_at_least_fifty_cases():
    assert len(CASES) >= 50


#: Cases whose input is only found bad once the run is under way (so a results folder may exist).
FOUND_MID_RUN = {"audit_half_the_banks_poisoned"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_ends_in_one_line(name, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default --out lands here, not in the repository
    argv = CASES[name](tmp_path)
    before = set(tmp_path.rglob("*"))
    code, stderr, shown = run_cli(argv, capfd, monkeypatch)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, f"exit {code}; stderr: {stderr[-500:]}"
    assert "Traceback" not in stderr
    assert len(lines) == 1 and not shown, lines + shown
    assert lines[0].startswith("error: "), lines[0]
    assert not complete_results(tmp_path)
    made = sorted(str(p.relative_to(tmp_path)) for p in set(tmp_path.rglob("*")) - before)
    assert not made or name in FOUND_MID_RUN, f"bad input left {made[:5]}"


# --- a real process for a few ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config_is_a_directory", "missing_argument"])
def test_bad_input_in_a_real_process(name, tmp_path):
    argv = CASES[name](tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "fedrisk", *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(lines) == 1, lines


# --- legal inputs that must work -------------------------------------------------------------------------

UNICODE = ["企业", "Zürich", "🚀", "e\u0301", "שלום", "Ω", " leading space", "tab\there", "ﬁ", "nbsp\u00a0"]


def test_unicode_ids_are_legal(tmp_path, capfd, monkeypatch):
    """IDs in any script, with emoji, combining marks, spaces and tabs: PSI-aligned and scored like any other."""
    monkeypatch.chdir(tmp_path)
    n = 600
    ids = [f"{UNICODE[i % len(UNICODE)]}-{i}" for i in range(n)]
    partner_ids = ids[::-1][: n - 100]  # the partner knows 500 of the 600, in another order
    parties = {
        "bank": (bank(n, ids=ids, rate=0.15), "bank.csv", "default"),
        "tax": (tax(n - 100, partner_ids), "tax.parquet", None),
    }
    argv = tables(tmp_path, parties, extra="[federation.vertical]\npsi_parallel = false\n")
    monkeypatch.setattr(sys, "argv", ["fedrisk", *argv])
    with _no_exit():
        cli.main()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["complete"] is True
    metrics = pd.read_csv(tmp_path / "out" / "metrics.csv")
    covered = metrics[(metrics.method == "federated") & (metrics.split == "test[covered_by_tax]")]
    test = metrics[(metrics.method == "federated") & (metrics.split == "test")]
    share = covered.n.iloc[0] / test.n.iloc[0]
    assert 0.7 < share < 0.95  # 500 of 600 known: PSI matched the Unicode IDs (none would give 0)


def test_zero_padded_ids_and_missing_tokens_are_legal_and_psi_runs_once(tmp_path, capfd, monkeypatch):
    """IDs that look like numbers join as written; "n/a" in a numeric column is a missing value, counted in one
    warning; the match rate is reported; and PSI runs once for the run, not once per seed."""
    import fedrisk.protocol.psi as psi

    monkeypatch.chdir(tmp_path)
    calls = []
    real = psi.private_intersection
    monkeypatch.setattr(psi, "private_intersection", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    ids = [f"{i:07d}" for i in range(500)]
    frame = bank(500, ids=ids)
    frame["x"] = frame["x"].round(4).astype(object)
    frame.loc[:29, "x"] = "n/a"
    parties = {"bank": (frame, "bank.csv", "default"), "tax": (tax(400, ids[100:]), "tax.csv", None)}
    argv = tables(tmp_path, parties, extra="[federation.vertical]\npsi_parallel = false\n")
    code, stderr, shown = run_cli([*argv, "--set", "seeds=[0, 1]"], capfd, monkeypatch)
    assert code == 0, stderr[-800:]
    assert sorted(set(shown)) == [
        "FedriskWarning: data.parties.bank: 30 cells with a missing-value token ('n/a') read as missing (x: 30)"
    ]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["complete"] is True
    assert results["data"]["partners"]["tax"] | {"match_rate_by_seed": None} == {
        "rows": 400,
        "matched": 400,
        "match_rate": 0.8,
        "match_rate_by_seed": None,
    }
    assert calls == ["tax"]  # one PSI for both seeds


class _no_exit:
    """``main`` returns normally on success; a SystemExit here is a failure with its stderr."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is SystemExit:
            pytest.fail(f"fedrisk exited with {exc.code}")
        return False


# --- hypothesis: random overrides and random tables ---------------------------------------------------


def _dotted_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _dotted_keys(annotation, f"{prefix}{name}.")
        elif name != "sweep":
            keys.append(prefix + name)
    return keys


KEYS = _dotted_keys(ExperimentConfig)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(_toml(v) for v in value) + "]"


SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.booleans(),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4), st.just("[[1], {a = 1}]"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_random_overrides_validate_or_fail_in_one_line(overrides):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.toml"
        path.write_text("")
        texts = [
            f"{key}={value if isinstance(value, str) and value.startswith('[[') else _toml(value)}"
            for key, value in overrides
        ]
        try:
            config, _ = load_config(path, texts)
        except FedriskError as exc:
            assert "\n" not in str(exc) and str(exc)
        else:
            assert isinstance(config, ExperimentConfig)


CELLS = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from([0, 1, "0", "1", 1e300, -1e300]),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(min_size=0, max_size=8), CELLS, CELLS, st.sampled_from([0, 1, 2, None, "x"])),
        max_size=25,
    ),
    st.booleans(),
)
def test_random_tables_load_or_fail_in_one_line(rows, via_csv):
    frame = pd.DataFrame(rows, columns=["firm_id", "a", "b", "default"])
    try:
        if via_csv:  # the file reader sees what a user's export would contain
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "t.csv"
                frame.to_csv(path, index=False)
                frame = read_frame(path, "data.parties.t.path")
        table = table_from_frame(frame, "t", "firm_id", "default")
    except FedriskError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert len(set(table.ids)) == len(table.ids) == table.n_rows > 0
    assert set(np.unique(table.label)) <= {0, 1}
    numeric = table.features.select_dtypes("number")
    assert np.isfinite(numeric.fillna(0.0).to_numpy()).all()
    assert not table.features.isna().all().all()
