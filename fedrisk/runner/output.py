"""The results directory's front door: checked before anything is made, and `--force` removes only ours.

`check_output` answers every question about ``--out`` without writing (a probe directory is made and removed
at once), so a bad ``--out`` fails in one line with nothing created; `prepare_output` then clears (with
``--force``) exactly the entries fedrisk writes (`OWNED`) and records the run in ``run.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from fedrisk import __version__
from fedrisk.config import ExperimentConfig
from fedrisk.core.errors import FedriskError
from fedrisk.core.jsonio import atomic_write_json, fingerprint, make_private

#: Every entry fedrisk writes at the top of a results directory (``fedrisk run``, ``fedrisk report``,
#: ``python -m fedrisk.deploy``); ``report.*`` is matched by prefix.
OWNED = frozenset(
    {
        "run.json",
        "results.json",
        "metrics.csv",
        "history.csv",
        "splits.parquet",
        "deployment.json",
        "figures",
        "units",
        "work",
        "simulation",
    }
)
_ATOMIC_TMP = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")  # what `atomic_write_bytes` leaves if killed


def is_owned(name: str) -> bool:
    """Whether a top-level entry of a results directory is one fedrisk wrote (and `--force` may remove)."""
    tmp = _ATOMIC_TMP.match(name)
    if tmp:
        name = tmp.group("name")
    return name in OWNED or name.startswith("report.")


def check_output(root: Path, config: ExperimentConfig, force: bool) -> None:
    """Every reason not to use ``root`` for this run, as a `FedriskError`; creates nothing."""
    if root.exists() and not root.is_dir():
        raise FedriskError("--out", f"{root} is a file", "give a directory (new or empty) for the results")
    if not root.exists():
        _check_creatable(root)
        return
    _probe(root, root)
    entries = sorted(p.name for p in root.iterdir())
    if not entries:
        return
    run_file = root / "run.json"
    if not run_file.exists():
        raise FedriskError(
            "--out", f"{root} is not empty and is not a fedrisk run", "choose an empty directory"
        )
    if force:
        foreign = [name for name in entries if not is_owned(name)]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise FedriskError(
                "--out",
                f"--force would only remove fedrisk's files, but {root} also holds {shown}",
                "move those elsewhere, or choose another --out",
            )
        return
    if _complete(root / "results.json"):
        raise FedriskError(
            "--out",
            f"{root} already holds a complete run",
            "choose another --out, or pass --force to redo it",
        )
    if _read_json(run_file, "--out").get("fingerprint") != fingerprint(config.model_dump(mode="json")):
        raise FedriskError(
            "--out",
            f"{root} holds an unfinished run of a different config",
            "resume it with the same config and --set options, choose another --out, or pass --force",
        )


def _check_creatable(root: Path) -> None:
    """``root`` does not exist: its nearest existing ancestor must be a directory we may write in."""
    ancestor = root.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise FedriskError(
            "--out", f"cannot create {root}: {ancestor} is a file", "choose a path inside a directory"
        )
    _probe(ancestor, root)


def _probe(directory: Path, root: Path) -> None:
    """Make and remove a directory in ``directory``: the only reliable writability test (root may write
    anywhere per `os.access`, yet /sys refuses)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".fedrisk-probe-", dir=directory))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise FedriskError(
            "--out",
            f"cannot write results to {root} ({reason} in {directory})",
            "choose a writable directory",
        ) from None


def _read_json(path: Path, field: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise FedriskError(
            field,
            f"{path} is damaged (not a JSON object)",
            "pass --force to start this run again, or choose another --out",
        )
    return data


def _complete(results: Path) -> bool:
    try:
        return bool(json.loads(results.read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False  # missing or damaged: the run is not complete, and the summary is rewritten


def prepare_output(root: Path, config: ExperimentConfig, force: bool) -> None:
    """Refuse to overwrite a finished run; resume an unfinished run of the same experiment; with ``force``
    remove fedrisk's own entries first (never anything else: `check_output` refused those)."""
    check_output(root, config, force)
    if force and root.exists():
        for entry in root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    root.mkdir(parents=True, exist_ok=True)
    if config.runner.private_outputs:
        make_private(root)
    if not (root / "run.json").exists():
        atomic_write_json(
            root / "run.json",
            {
                "fedrisk_version": __version__,
                "fingerprint": fingerprint(config.model_dump(mode="json")),
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "config": config.model_dump(mode="json"),
            },
        )
    (root / "results.json").unlink(missing_ok=True)
