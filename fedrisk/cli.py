"""`fedrisk run | generate | report` — the command line users' scripts rely on (see the contract).

Every user error ends as one line on stderr naming the field and the fix, with a non-zero exit and no
traceback; a finished results directory is never overwritten without ``--force``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from fedrisk.core.errors import FedriskError, FedriskWarning

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Simulate federated learning for SME credit risk: how much does a bank's default model gain?",
)
console = Console()

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key by its dotted path: --set world.n_firms=20000"),
]


def _default_out(config_path: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", config_path.stem)
    return Path("runs") / f"{name}-{stamp}"


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Experiment config (TOML).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Results directory (default: runs/<config>-<time>).")
    ] = None,
    set_: SetOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo a run whose results directory is complete.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (for CI logs).")] = False,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Write report.md and plots at the end.")
    ] = True,
) -> None:
    """Run one experiment (all sweep points and seeds) and print the KS-uplift table."""
    from fedrisk.config.experiment import load_config
    from fedrisk.config.sweep import sweep_points
    from fedrisk.experiment import run_experiment
    from fedrisk.runner.progress import RunProgress

    cfg, raw = load_config(config, set_ or [])
    root = out or _default_out(config)
    n_units = sum(len(c.seeds) for _, c in sweep_points(cfg, raw))
    with RunProgress(cfg.name, n_units, console, enabled=not quiet and console.is_terminal) as progress:
        try:
            with _ctrl_c_watchdog(root):
                results = run_experiment(cfg, raw, root, force=force, on_unit_done=progress.unit_done)
        except KeyboardInterrupt:
            raise Interrupted(root) from None
    print_summary(results)
    if report:
        from fedrisk.report.build import build_report

        build_report(root)
    console.print(f"results: {root}")


@app.command()
def generate(
    config: Annotated[Path, typer.Argument(help="Experiment config (TOML); its [world] section is used.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", file_okay=False, help="Directory for the holders' tables, manifest.json and data.toml."
        ),
    ],
    set_: SetOption = None,
    seed: Annotated[
        int | None, typer.Option(min=0, max=2**32 - 1, help="World seed (default: the config's first seed).")
    ] = None,
    file_format: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing manifest.")] = False,
) -> None:
    """Write each data holder's synthetic table (one file per party) and a manifest."""
    from fedrisk.config.experiment import load_config
    from fedrisk.export import write_world

    cfg, _ = load_config(config, set_ or [])
    if file_format not in ("parquet", "csv"):
        raise FedriskError("--format", f"unknown format {file_format!r}", "use parquet or csv")
    manifest = write_world(cfg, out, seed if seed is not None else cfg.seeds[0], file_format, force)
    table = Table(title=f"world written to {out}")
    for column in ("party", "rows", "features", "label", "file"):
        table.add_column(column)
    for party in manifest["parties"]:
        table.add_row(
            party["name"],
            str(party["rows"]),
            str(len(party["features"])),
            party["label"] or "-",
            party["path"],
        )
    console.print(table)
    console.print(f"[data] block for a config: {out / 'data.toml'}")


@app.command("report")
def report_cmd(
    directory: Annotated[Path, typer.Argument(help="A results directory written by `fedrisk run`.")],
) -> None:
    """(Re)build report.md and the PNG plots from a results directory."""
    from fedrisk.report.build import build_report

    path = build_report(directory)
    console.print(f"report: {path}")


def _fmt(block: dict | None, digits: int = 3) -> str:
    if not block or block.get("mean") is None:
        return "-"
    lo, hi = block["ci"]
    return f"{block['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _mean(block: dict | None) -> str:
    return "-" if not block or block.get("mean") is None else f"{block['mean']:.3f}"


def _table(title: str) -> Table:
    """Borderless, so four "mean [lo, hi]" columns fit an 80-column terminal without wrapping."""
    return Table(
        title=title,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )


def print_summary(results: dict) -> None:
    """The KS-uplift table: one row per method, then the uplift of federated over siloed."""
    seeds = results["seeds"]
    title = f"{results.get('name', '')} — {results['topology']}, {len(seeds)} seeds (mean [95% CI])"
    table = _table(title)
    for column in ("method", "KS", "AUC", "Gini"):
        if column == "method":
            table.add_column(column, overflow="fold")  # a long method name folds, the numbers never do
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for method, block in results["methods"].items():
        table.add_row(method, _fmt(block["ks"]), _fmt(block["auc"]), _fmt(block["gini"]))
    console.print(table)
    for method, block in results["methods"].items():
        if "auc_below_0.5" in block.get("flags", []):
            console.print(
                f"[bold red]warning:[/] {method} has AUC below 0.5: it ranks applicants backwards "
                "(check training settings such as training.lr and training.weight_decay)"
            )
    later = (results.get("out_of_time") or {}).get("methods") or {}
    if later:  # credit models are validated on later applicants: that KS beside the in-time one
        drift = _table("KS out of time (later applicants) beside in time")
        for column in ("method", "KS in time", "KS out of time"):
            drift.add_column(column, justify="left" if column == "method" else "right", no_wrap=True)
        for method, block in results["methods"].items():
            drift.add_row(method, _fmt(block["ks"]), _fmt((later.get(method) or {}).get("ks")))
        console.print(drift)
    uplift = results.get("uplift") or {}
    if uplift:
        rel = uplift["ks_relative"]
        rel_text = (
            f"{100 * rel['mean']:+.1f}% [{100 * rel['ci'][0]:+.1f}%, {100 * rel['ci'][1]:+.1f}%]"
            if rel["mean"] is not None
            else "-"
        )
        up = _table("uplift of federated over siloed")
        for column in ("KS relative", "KS points", "AUC points"):
            up.add_column(column, justify="right", no_wrap=True)
        up.add_row(rel_text, _fmt(uplift["ks_points"]), _fmt(uplift["auc_points"]))
        console.print(up)
        personal = results.get("uplift_personalized")
        if personal:  # each bank's own fine-tuned model: per bank in results.json parties and the report
            own = _table("uplift of personalized over siloed")
            for column in ("KS points", "AUC points"):
                own.add_column(column, justify="right", no_wrap=True)
            own.add_row(_fmt(personal["ks_points"]), _fmt(personal["auc_points"]))
            console.print(own)
        protection = results.get("label_protection")
        if protection:
            from fedrisk.report.fmt import protection_sentence

            console.print(protection_sentence(protection))
    if results.get("sweep"):
        sweep = _table("every sweep point (mean KS; CIs in results.json and the report)")
        for column in ("point", "siloed", "federated", "centralized", "uplift", "ε"):
            sweep.add_column(column, justify="left" if column == "point" else "right")
        for entry in results["sweep"]:
            methods = entry.get("methods", {})
            rel = (entry.get("uplift") or {}).get("ks_relative") or {}
            eps = (entry.get("cost") or {}).get("epsilon")
            sweep.add_row(
                entry["point"],
                *(_mean(methods.get(m, {}).get("ks")) for m in ("siloed", "federated", "centralized")),
                "-" if rel.get("mean") is None else f"{100 * rel['mean']:+.1f}%",
                "∞" if eps is None else f"{eps:.2f}",
            )
        console.print(sweep)
    cost = results.get("cost", {})
    eps = cost.get("epsilon")
    waited = cost.get("session_wall_seconds")
    console.print(
        f"time: {'-' if waited is None else f'{waited:.1f}'} s wall clock (this session), "
        f"{cost.get('wall_seconds', 0):.1f} s compute (all methods and seeds)"
    )
    console.print(
        f"cost: {cost.get('bytes_sent', 0) / 1e6:.2f} MB sent per federated run, "
        f"epsilon = {'∞ (no DP)' if eps is None else f'{eps:.2f}'}; complete = {results['complete']}"
    )


class Interrupted(Exception):
    """Ctrl-C during `fedrisk run`: carries the results directory, so the message can say how to resume."""

    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self.root = root


def _resume_command(root: Path) -> str:
    """The command that resumes: the user's own, with ``--out`` added when it was the timestamped default."""
    argv = ["fedrisk", *sys.argv[1:]]
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(root)]
    return shlex.join(argv)


_exiting = threading.Lock()
"""Held by whoever ends the process after Ctrl-C (the main thread or `_ctrl_c_watchdog`), so only one does."""

WATCHDOG_SECONDS = 3.0
"""How long after Ctrl-C the main thread may take to stop before the watchdog ends the process itself."""


@contextlib.contextmanager
def _ctrl_c_watchdog(root: Path) -> Iterator[None]:
    """End the run even when the main thread cannot notice Ctrl-C.

    Python handles a signal in the main thread between bytecodes; a library call in C can keep it from
    doing so (Ray's start-up waits ~10 s on its control service once its processes got the same Ctrl-C).
    `signal.set_wakeup_fd` writes the signal's number to a pipe at once, from C: a thread reading that pipe
    gives the main thread `WATCHDOG_SECONDS`, then ends the children and the process itself.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def watch() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while True:
                data = pipe.read(64)
                if not data:
                    return  # the pipe was closed: the run ended
                if signal.SIGINT in data:
                    break
        time.sleep(WATCHDOG_SECONDS)
        _interrupted(root)

    threading.Thread(target=watch, name="fedrisk-ctrl-c-watchdog", daemon=True).start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(write_end)


def _interrupted(root: Path | None) -> None:
    """Ctrl-C: end every child process (pool workers, Ray, Flower, PSI), say how to resume, exit 130."""
    from fedrisk.runner.processes import end_children

    _exiting.acquire()  # if the watchdog got here first, it ends the process while this waits
    end_children(keep=_SPARED)
    if root is None:
        print("interrupted", file=sys.stderr)
    else:
        print(
            f"interrupted: {root} keeps every finished unit; to resume, run: {_resume_command(root)}",
            file=sys.stderr,
        )
    _exit(130)


def _exit(code: int) -> None:
    """Exit now. A library thread that does not stop (Flower's ServerApp thread under Ray waits for replies
    that will never come) would make Python wait for it at exit, so then the process ends without waiting."""
    stray = [
        t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    if stray or threading.current_thread() is not threading.main_thread():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _exiting.release()
    sys.exit(code)


def _one_line_warnings() -> None:
    """A `FedriskWarning` prints as ``warning: <message>``, one line (Python adds file, line and source)."""
    default = warnings.formatwarning
    if getattr(default, "fedrisk", False):
        return  # installed by an earlier call in this process

    def formatwarning(message, category, filename, lineno, line=None) -> str:
        if issubclass(category, FedriskWarning):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    formatwarning.fedrisk = True  # type: ignore[attr-defined]
    warnings.formatwarning = formatwarning


_SPARED: set[int] = set()
"""Processes that were children before `main` ran (none for the command; a test runner's own helpers when
`main` is called in-process): Ctrl-C ends only what the run started."""


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2; Ctrl-C exits 130."""
    from fedrisk.runner.processes import child_pids

    _SPARED.clear()
    _SPARED.update(child_pids())
    _one_line_warnings()
    try:
        code = app(standalone_mode=False)
    except FedriskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        _interrupted(exc.root)
    except KeyboardInterrupt:
        _interrupted(None)
    except Exception as exc:  # click's usage errors carry their own exit codes
        import click

        if isinstance(exc, click.exceptions.ClickException):  # one line, as for every other bad input
            command = getattr(getattr(exc, "ctx", None), "command_path", "fedrisk")
            message = " ".join(exc.format_message().split()).rstrip(".")
            print(f"error: {message}; see `{command} --help`", file=sys.stderr)
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise
    if code == 130:  # typer turns a KeyboardInterrupt outside `run` into exit code 130
        _interrupted(None)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
