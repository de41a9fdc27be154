"""What a user sees and gets on disk: the summary fits an 80-column terminal, files follow the umask."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from rich.console import Console

import fedrisk.cli as cli
from fedrisk.config import ExperimentConfig
from fedrisk.core.jsonio import _UMASK
from fedrisk.runner.loop import prepare_output

ROOT = Path(__file__).resolve().parents[1]


def _block(mean: float) -> dict:
    return {"mean": mean, "std": 0.01, "ci": [mean - 0.035, mean + 0.035]}


def _results(methods: list[str]) -> dict:
    return {
        "name": "vertical_ks_uplift",
        "topology": "vertical",
        "seeds": [0, 1, 2, 3, 4],
        "methods": {m: {"ks": _block(0.318), "auc": _block(0.709), "gini": _block(0.419)} for m in methods},
        "uplift": {
            "ks_relative": {"mean": 0.267, "ci": [0.178, 0.379]},
            "ks_points": _block(0.085),
            "auc_points": _block(0.059),
        },
        "uplift_personalized": {"ks_points": _block(0.091), "auc_points": _block(0.061)},
        "out_of_time": {"methods": {m: {"ks": _block(0.291)} for m in methods}},
        "cost": {"wall_seconds": 145.4, "session_wall_seconds": 92.1, "bytes_sent": 13.4e6, "epsilon": None},
        "complete": True,
    }


def test_summary_fits_80_columns_and_shows_the_wall_time_waited(monkeypatch):
    console = Console(width=80, record=True, color_system=None)
    monkeypatch.setattr(cli, "console", console)
    methods = ["siloed", "centralized", "federated", "personalized", "reference_hgb"]
    cli.print_summary(_results(methods))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    for method in methods:  # each method's three "mean [lo, hi]" cells on its own single line
        (row, later) = [line for line in lines if line.startswith(method)]
        assert row.count("[") == 3 and row.count("]") == 3, row
        assert later.count("[") == 2 and "0.291 [0.256, 0.326]" in later, later  # out of time beside in time
    assert "0.091 [0.056, 0.126]" in text  # personalized over siloed
    assert "+26.7% [+17.8%, +37.9%]" in text
    assert "92.1 s wall clock" in text and "145.4 s compute" in text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask(tmp_path):
    code = (
        "import sys; from pathlib import Path; from fedrisk.core.jsonio import atomic_write_json; "
        "atomic_write_json(Path(sys.argv[1]), {'a': 1})"
    )
    for umask, expected in (("022", 0o644), ("077", 0o600)):
        target = tmp_path / f"umask{umask}.json"
        proc = subprocess.run(
            ["bash", "-c", f'umask {umask} && exec "$0" -c "$1" "$2"', sys.executable, code, str(target)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert _mode(target) == expected, (umask, oct(_mode(target)))
        assert not list(tmp_path.glob(".*.tmp"))


def test_private_outputs_make_the_results_directory_owner_only(tmp_path):
    open_root, private_root = tmp_path / "open", tmp_path / "private"
    prepare_output(open_root, ExperimentConfig(), force=False)
    prepare_output(
        private_root, ExperimentConfig.model_validate({"runner": {"private_outputs": True}}), False
    )
    assert _mode(private_root) == 0o700
    assert _mode(open_root) == 0o777 & ~_UMASK  # without the option the umask decides, as for mkdir
    assert _mode(private_root / "run.json") & 0o600 == 0o600
