"""Child processes never outlive a run: Ctrl-C ends the pool at once, a killed parent takes its workers along.

The fast tests drive `run_in_pool` from a small script (a job that sleeps stands for a unit that takes
minutes); the slow ones run the real CLI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

POOL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from fedrisk.runner.processes import run_in_pool

    def job(seconds):
        print("worker", __import__("os").getpid(), flush=True)
        time.sleep(seconds)
        return seconds

    if __name__ == "__main__":
        try:
            run_in_pool(job, [(60,), (60,), (60,)], 2)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
    """
)


def _start(script: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _workers(proc: subprocess.Popen, n: int, timeout: float = 60.0) -> list[int]:
    """The pids of the first ``n`` jobs to start (each prints its pid)."""
    pids: list[int] = []
    deadline = time.monotonic() + timeout
    while len(pids) < n and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("worker "):
            pids.append(int(line.split()[1]))
    assert len(pids) == n, f"only {pids} started; stderr: {proc.stderr.read() if proc.poll() else ''}"
    return pids


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


def test_ctrl_c_ends_the_pool_at_once(tmp_path):
    """Before: the pool waited for the running jobs (here 60 s; a unit can take minutes)."""
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    proc = _start(script)
    workers = _workers(proc, 2)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)  # to the parent only, as `kill -INT` does; a terminal sends it to all
    try:
        code = proc.wait(timeout=15)
    finally:
        proc.kill()
    assert code == 130 and time.monotonic() - started < 10
    assert not _wait_gone(workers, 5.0)


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """Before: SIGKILL of the parent left the workers computing (and writing units) on their own."""
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    proc = _start(script)
    workers = _workers(proc, 2)
    proc.kill()
    proc.wait(timeout=10)
    assert not _wait_gone(workers, 5.0), "workers outlived their parent"


# --- the real command line (slow: it starts Python, torch and, for Ray, a Ray cluster) ----------------------


def _cli(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedrisk",
            "run",
            str(config),
            "--out",
            str(out),
            "--quiet",
            "--no-report",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # its own process group, like a shell job; Ctrl-C reaches the whole group
    )


def _descendants_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early: {proc.stderr.read()[-2000:]}"
        children = psutil.Process(proc.pid).children(recursive=True)
        if ready(children):
            return [c.pid for c in children]
        time.sleep(0.2)
    raise AssertionError("the run never reached the state to interrupt")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["inprocess", "ray"])
def test_cli_ctrl_c_exits_130_says_how_to_resume_and_leaves_no_process(vertical_tables, backend):
    """Before: exit 0 (the interrupt status was dropped); under Ray the command hung for minutes."""
    out = vertical_tables / "out"
    workers = "2" if backend == "inprocess" else "1"
    proc = _cli(
        vertical_tables / "config.toml",
        out,
        "--set",
        f"federation.backend={backend}",
        "--set",
        f"runner.workers={workers}",
        "--set",
        "training.epochs=200",
        "--set",
        "training.patience=0",
    )

    def ready(children) -> bool:
        if backend == "ray":  # the ClientApps run in Ray actors: the federated training is under way
            return any(" ".join(_cmdline(c)).startswith("ray::") for c in children)
        return len(children) >= 2 and (out / "units").exists()

    children = _descendants_when(proc, ready, timeout=300)
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    try:
        code = proc.wait(timeout=60)
    finally:
        with_leftovers = _alive(children)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stderr = proc.stderr.read()
    assert code == 130, stderr[-2000:]
    assert time.monotonic() - started < 30
    assert "to resume, run: fedrisk run" in stderr and str(out) in stderr
    assert not _wait_gone(with_leftovers, 10.0), "child processes outlived the interrupted run"


@pytest.mark.slow
def test_cli_sigkill_leaves_no_worker_running(vertical_tables):
    out = vertical_tables / "out"
    proc = _cli(
        vertical_tables / "config.toml", out, "--set", "runner.workers=2", "--set", "training.epochs=200"
    )
    children = _descendants_when(proc, lambda c: len(c) >= 2 and (out / "units").exists())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not _wait_gone(children, 10.0), "workers outlived their killed parent"


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []
