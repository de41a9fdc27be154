"""scripts/install.sh: CPU torch first with a fast-failing index, the plain pin as fallback, once per hash.

pip is replaced by a stub that logs its arguments (and fails the index attempt on request), so this tests the
script's decisions, not the network; experiments/benchmarks/install_fallback.py measures what the failing
attempt costs with the real pip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUB = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
if [[ "$*" == *"--index-url"* && "${STUB_FAIL_INDEX:-0}" == 1 ]]; then echo "unreachable" >&2; exit 1; fi
exit 0
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "install.sh", tmp_path / "scripts" / "install.sh")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STUB)
    python.chmod(0o755)
    return tmp_path


def _install(repo: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = repo / "pip.log"
    log.unlink(missing_ok=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FEDRISK_")}
    proc = subprocess.run(
        ["bash", str(repo / "scripts" / "install.sh")],
        env={**environ, "STUB_LOG": str(log), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, log.read_text().splitlines() if log.exists() else []


def test_cpu_index_first_with_a_short_timeout_and_no_retries(repo: Path) -> None:
    proc, calls = _install(repo)
    assert proc.returncode == 0, proc.stderr
    torch = [c for c in calls if "torch==2.13.0" in c]
    assert len(torch) == 1
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch[0]
    assert "--retries 0" in torch[0] and "--timeout 10" in torch[0]
    assert any("-e .[test]" in c for c in calls)


def test_unreachable_index_falls_back_to_the_plain_pin(repo: Path) -> None:
    proc, calls = _install(repo, STUB_FAIL_INDEX="1")
    assert proc.returncode == 0, proc.stderr
    torch = [c for c in calls if "torch==2.13.0" in c]
    assert len(torch) == 2 and "--index-url" not in torch[1]
    assert "not reachable; falling back" in proc.stderr and "FEDRISK_TORCH_INDEX" in proc.stderr


def test_gpu_users_choose_the_index(repo: Path) -> None:
    _, calls = _install(repo, FEDRISK_TORCH_INDEX="https://download.pytorch.org/whl/cu128")
    assert "--index-url https://download.pytorch.org/whl/cu128" in next(c for c in calls if "torch==" in c)
    _, calls = _install(repo, FEDRISK_TORCH_INDEX="default", FEDRISK_REINSTALL="1")
    assert "--index-url" not in next(c for c in calls if "torch==" in c)


def test_installs_once_until_pyproject_changes(repo: Path) -> None:
    _, first = _install(repo)
    assert first and (repo / ".venv" / "fedrisk-install.stamp").exists()
    os.utime(repo / "pyproject.toml")  # touched, same content: make would re-run the script; it skips
    _, again = _install(repo)
    assert again == []
    with open(repo / "pyproject.toml", "a") as handle:
        handle.write("\n# changed\n")
    _, changed = _install(repo)
    assert any("torch==2.13.0" in c for c in changed)
