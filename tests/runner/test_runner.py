"""Runner: contract-shaped results, resume after a kill, no silent overwrite, bad topology."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedrisk.config.experiment import load_config
from fedrisk.core.errors import FedriskError, FedriskWarning
from fedrisk.experiment import run_experiment
from fedrisk.runner import loop as runner
from fedrisk.runner.output import prepare_output

BASELINES = ("siloed", "centralized")
CONTRACT_CHECK = Path(__file__).resolve().parents[3] / "shared" / "checks" / "contract_check.py"


def test_baselines_run_writes_contract_keys_and_pooled_beats_bank(vertical_tables):
    cfg, raw = load_config(vertical_tables / "config.toml")
    out = vertical_tables / "out"
    results = run_experiment(cfg, raw, out, methods=BASELINES)
    assert results["complete"] is True and results["topology"] == "vertical"
    for method in BASELINES:
        ks = results["methods"][method]["ks"]
        assert 0.0 < ks["mean"] < 1.0 and ks["ci"][0] <= ks["mean"] <= ks["ci"][1]
    # the tax table carries half the signal: pooling must beat the bank alone on average
    assert results["methods"]["centralized"]["ks"]["mean"] > results["methods"]["siloed"]["ks"]["mean"] + 0.03
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics["method"]) == set(BASELINES)
    assert set(metrics["seed"]) == {0, 1}
    assert {"test", "test[covered_by_tax]", "test[uncovered_by_tax]"} <= set(metrics["split"])
    assert json.loads((out / "results.json").read_text())["complete"] is True


def test_finished_run_is_not_overwritten_without_force(vertical_tables):
    cfg, raw = load_config(vertical_tables / "config.toml")
    out = vertical_tables / "out"
    run_experiment(cfg, raw, out, methods=BASELINES)
    with pytest.raises(FedriskError, match="already holds a complete run"):
        run_experiment(cfg, raw, out, methods=BASELINES)
    other, other_raw = load_config(vertical_tables / "config.toml", ["training.lr=0.02"])
    (out / "results.json").unlink()
    with pytest.raises(FedriskError, match="different config"):
        run_experiment(other, other_raw, out, methods=BASELINES)
    assert run_experiment(other, other_raw, out, methods=BASELINES, force=True)["complete"]


def test_interrupted_run_resumes_without_redoing_finished_units(vertical_tables, monkeypatch):
    cfg, raw = load_config(vertical_tables / "config.toml")
    out = vertical_tables / "out"
    calls: list[tuple[str, int]] = []
    real = runner.run_method

    def dying(method, config, setting, seed, workdir, backend=None, **kw):
        if seed == 1 and method == "centralized":
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-run
        calls.append((method, seed))
        return real(method, config, setting, seed, workdir, backend, **kw)

    monkeypatch.setattr(runner, "run_method", dying)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, raw, out, methods=BASELINES)
    assert not (out / "results.json").exists()  # nothing that looks complete
    assert calls == [("siloed", 0), ("centralized", 0), ("siloed", 1)]
    finished = {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in (out / "units").rglob("*.npz")}
    assert len(finished) == 3

    calls.clear()
    monkeypatch.setattr(
        runner, "run_method", lambda *a, **kw: (calls.append((a[0], a[3])), real(*a, **kw))[1]
    )
    results = run_experiment(cfg, raw, out, methods=BASELINES)
    assert calls == [("centralized", 1)]  # only what had not finished
    assert results["complete"] is True
    for path, mtime in finished.items():
        assert (out / path).stat().st_mtime_ns == mtime
    assert len(pd.read_csv(out / "metrics.csv").query("split == 'test'")) == 4  # no duplicates


def test_two_labelled_parties_is_not_vertical(vertical_tables):
    text = (
        (vertical_tables / "config.toml")
        .read_text()
        .replace('id = "firm_id"\n\n[training]', 'id = "firm_id"\nlabel = "revenue_growth"\n\n[training]')
    )
    (vertical_tables / "config.toml").write_text(
        text.replace('name = "tiny_vertical"', 'name = "x"\ntopology = "vertical"')
    )
    cfg, raw = load_config(vertical_tables / "config.toml")
    with pytest.raises(FedriskError, match="label"):
        run_experiment(cfg, raw, vertical_tables / "out", methods=BASELINES)


def test_cli_bad_input_is_one_line_without_traceback(vertical_tables):
    env_cmd = [
        sys.executable,
        "-m",
        "fedrisk",
        "run",
        str(vertical_tables / "config.toml"),
        "--set",
        "world.default_rate=1.5",
    ]
    proc = subprocess.run(env_cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "world.default_rate" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    missing = subprocess.run(
        [sys.executable, "-m", "fedrisk", "run", str(vertical_tables / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        missing.returncode != 0 and "file not found" in missing.stderr and "Traceback" not in missing.stderr
    )


def test_reference_models_add_sklearn_rows(vertical_tables):
    cfg, raw = load_config(vertical_tables / "config.toml", ["evaluation.reference_models=true", "seeds=[0]"])
    results = run_experiment(
        cfg, raw, vertical_tables / "ref", methods=("siloed", "pooled_sklearn_lr", "pooled_hgb")
    )
    assert results["complete"]
    ks = {m: results["methods"][m]["ks"]["mean"] for m in results["methods"]}
    # scikit-learn's pooled LR sees the tax signal the bank lacks
    assert ks["pooled_sklearn_lr"] > ks["siloed"] + 0.03
    assert ks["pooled_hgb"] > ks["siloed"]


def test_enabled_audit_runs_per_seed_and_lands_in_results(vertical_tables):
    cfg, raw = load_config(
        vertical_tables / "config.toml",
        [
            "audit.fairness.enabled=true",
            'audit.fairness.groups=["sector"]',
            "audit.fairness.gap_group=sector",
            "audit.fairness.gap_group_value=agri",
            "audit.fairness.gap_reference=retail",
        ],
    )
    out = vertical_tables / "audited"
    results = run_experiment(cfg, raw, out, methods=BASELINES)
    assert results["complete"] is True
    fairness = results["audits"]["fairness"]
    assert set(fairness) == {"seed=0", "seed=1"}
    assert "sector" in json.dumps(fairness["seed=0"])
    # an audit result that goes missing makes the run incomplete again, and a rerun restores it
    (out / "units" / "base" / "seed=1" / "audit_fairness.json").unlink()
    (out / "results.json").unlink()
    again = run_experiment(cfg, raw, out, methods=BASELINES)
    assert again["complete"] is True and set(again["audits"]["fairness"]) == {"seed=0", "seed=1"}


def test_bad_table_fails_before_any_results_directory_exists(vertical_tables):
    (vertical_tables / "tax.parquet").unlink()
    cfg, raw = load_config(vertical_tables / "config.toml")
    with pytest.raises(FedriskError, match="file not found"):
        run_experiment(cfg, raw, vertical_tables / "never")
    assert not (vertical_tables / "never").exists()


def test_force_never_wipes_a_directory_that_is_not_a_run(vertical_tables):
    cfg, raw = load_config(vertical_tables / "config.toml")
    precious = vertical_tables / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(FedriskError, match="not a fedrisk run"):
        run_experiment(cfg, raw, precious, methods=BASELINES, force=True)
    assert (precious / "thesis.tex").read_text() == "years of work"


# --- failure handling (issue 15) ----------------------------------------------------------------------------

QUICK = ["training.epochs=2", "evaluation.n_bootstrap=0"]  # what these tests check does not need more


def test_force_removes_only_what_fedrisk_wrote(vertical_tables):
    cfg, _ = load_config(vertical_tables / "config.toml")
    out = vertical_tables / "run"
    for name in ("units/base/seed=0", "work/psi", "figures"):
        (out / name).mkdir(parents=True)
    for name in (
        "run.json",
        "results.json",
        "metrics.csv",
        "report.md",
        "report.html",
        ".results.json.x1.tmp",
    ):
        (out / name).write_text("{}")
    (out / "thesis.tex").write_text("years of work")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(
        FedriskError, match=r"--force would only remove fedrisk's files, .* holds thesis\.tex"
    ):
        prepare_output(out, cfg, force=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing removed
    (out / "thesis.tex").unlink()
    prepare_output(out, cfg, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]
    assert json.loads((out / "run.json").read_text())["config"]["name"] == "tiny_vertical"


@pytest.mark.parametrize("where", ["/sys/fedrisk-out", "file/run"])
def test_unwritable_out_fails_before_anything_is_made(vertical_tables, where):
    (vertical_tables / "file").write_text("x")
    cfg, raw = load_config(vertical_tables / "config.toml")
    out = Path(where) if where.startswith("/") else vertical_tables / where
    before = sorted(vertical_tables.rglob("*"))
    with pytest.raises(FedriskError, match=r"^--out: cannot (write results to|create)"):
        run_experiment(cfg, raw, out, methods=BASELINES)
    assert sorted(vertical_tables.rglob("*")) == before and not out.exists()


def test_overlap_below_min_overlap_is_refused_before_any_output(vertical_tables):
    cfg, raw = load_config(vertical_tables / "config.toml", ["data.min_overlap=3000"])
    with pytest.raises(
        FedriskError, match=r"data.min_overlap: tax shares \d+ firms with bank .* fewer than the 3000"
    ):
        run_experiment(cfg, raw, vertical_tables / "never", methods=BASELINES)
    assert not (vertical_tables / "never").exists()


def test_damaged_and_swapped_units_are_named_and_recomputed(vertical_tables, monkeypatch):
    """Before: a 0-byte unit stopped every resume with exit 1 and no message, a cut JSON gave a traceback and
    a unit copied from another seed was silently used."""
    cfg, raw = load_config(vertical_tables / "config.toml", QUICK)
    out = vertical_tables / "out"
    first = run_experiment(cfg, raw, out, methods=BASELINES)
    metrics = (out / "metrics.csv").read_text()
    seed0, seed1 = out / "units" / "base" / "seed=0", out / "units" / "base" / "seed=1"
    for suffix in (".json", ".npz"):  # seed 1's siloed result replaced by seed 0's
        (seed1 / f"siloed{suffix}").write_bytes((seed0 / f"siloed{suffix}").read_bytes())
    (seed0 / "siloed.json").write_bytes(b"")
    text = (seed0 / "centralized.json").read_text()
    (seed0 / "centralized.json").write_text(text[: len(text) // 2])
    (out / "results.json").unlink()

    calls: list[tuple[str, int]] = []
    real = runner.run_method
    monkeypatch.setattr(
        runner, "run_method", lambda *a, **kw: (calls.append((a[0], a[3])), real(*a, **kw))[1]
    )
    with pytest.warns(FedriskWarning) as caught:
        again = run_experiment(cfg, raw, out, methods=BASELINES)
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, FedriskWarning))
    assert len(messages) == 3, messages
    assert "seed=0/centralized.json: not valid JSON" in messages[0]
    assert "seed=0/siloed.json: empty file" in messages[1]
    assert "seed=1/siloed.json: holds the result of seed 0, not seed 1" in messages[2]
    assert sorted(calls) == [("centralized", 0), ("siloed", 0), ("siloed", 1)]
    assert again["complete"] and (out / "metrics.csv").read_text() == metrics  # the same numbers as before
    assert again["methods"]["siloed"]["ks"] == first["methods"]["siloed"]["ks"]


def test_units_from_other_input_tables_are_recomputed(vertical_tables):
    cfg, raw = load_config(vertical_tables / "config.toml", ["seeds=[0]", *QUICK])
    out = vertical_tables / "out"
    run_experiment(cfg, raw, out, methods=("siloed",))
    bank = pd.read_csv(vertical_tables / "bank.csv", dtype={"firm_id": str})
    bank["utilisation"] = -bank["utilisation"]  # the table changed between the interruption and the resume
    bank.to_csv(vertical_tables / "bank.csv", index=False)
    (out / "results.json").unlink()
    with pytest.warns(FedriskWarning, match="seed=0/siloed.json: was computed from a different config or"):
        run_experiment(cfg, raw, out, methods=("siloed",))


def test_match_rate_per_partner_in_results_and_report(vertical_tables):
    from fedrisk.report.build import build_report

    cfg, raw = load_config(vertical_tables / "config.toml", ["seeds=[0]", *QUICK])
    out = vertical_tables / "out"
    results = run_experiment(cfg, raw, out, methods=("siloed",))
    bank = pd.read_csv(vertical_tables / "bank.csv", dtype={"firm_id": str})
    tax = pd.read_parquet(vertical_tables / "tax.parquet")
    matched = int(bank["firm_id"].isin(tax["firm_id"]).sum())
    partner = results["data"]["partners"]["tax"]
    assert partner["matched"] == matched and partner["match_rate"] == pytest.approx(matched / len(bank))
    assert 0.6 < partner["match_rate"] < 0.8 and results["data"]["rows"]["tax"] == len(tax)
    build_report(out)
    assert f"tax {matched / len(bank):.1%} ({matched:,} firms)" in (out / "report.md").read_text()


def test_ctrl_c_exits_130_and_says_how_to_resume(vertical_tables, monkeypatch, capsys):
    """Before: the CLI swallowed the interrupt status and exited 0."""
    import fedrisk.cli as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_method", interrupted)
    config = str(vertical_tables / "config.toml")
    monkeypatch.setattr(sys, "argv", ["fedrisk", "run", config, "--quiet", "--set", "seeds=[0]"])
    monkeypatch.chdir(vertical_tables)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    resume = err.split("to resume, run: ")[1]
    assert resume.startswith(f"fedrisk run {config} --quiet --set 'seeds=[0]' --out runs/config-")
    assert (vertical_tables / resume.split("--out ")[1] / "run.json").exists()


def test_synthetic_partner_names_are_the_worlds():
    """`preflight` checks ``data.partners`` against these names without generating a world."""
    from fedrisk.config.world import WorldConfig
    from fedrisk.data.synthetic import generate_world
    from fedrisk.methods.registry import SYNTHETIC_PARTNERS

    world = generate_world(WorldConfig(n_firms=400), seed=0)
    assert set(world.parties) == set(world.bank_names) | set(SYNTHETIC_PARTNERS)
