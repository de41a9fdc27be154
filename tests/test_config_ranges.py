"""Every number in the config is finite and bounded: inf, nan, negative and absurd values fail in one line.

The test walks the whole schema (every section, every int/float field, lists of numbers and lists of
sections), so a field added later without bounds fails here until it gets them.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

import fedrisk.cli as cli
from fedrisk.config.experiment import ExperimentConfig, set_dotted, validate
from fedrisk.core.errors import FedriskError

BAD_VALUES = (float("inf"), float("-inf"), float("nan"), -1, -1e30, 1e30)
"""Rejected by every numeric field: no field may be infinite, NaN, below -1 or above 1e30."""

INF_MEANS_OFF = {"federation.horizontal.dp.target_epsilon"}
"""Fields where +inf is a documented setting (ε = inf turns DP off), not an overflow."""


def _members(annotation: object) -> list[object]:
    """The types an annotation admits (unions and Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation]


def _is_number(annotation: object) -> bool:
    return any(m in (int, float) for m in _members(annotation))


def numeric_fields(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[tuple[str, bool]]:
    """``(dotted path, is a list)`` of every numeric field under ``model``; list-of-section paths use ``[0]``."""
    found: list[tuple[str, bool]] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        for member in _members(info.annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                found += numeric_fields(member, f"{path}.")
            elif typing.get_origin(member) is list:
                (item,) = typing.get_args(member)
                inner = _members(item)
                if any(isinstance(i, type) and issubclass(i, BaseModel) for i in inner):
                    section = next(i for i in inner if isinstance(i, type) and issubclass(i, BaseModel))
                    found += numeric_fields(section, f"{path}[0].")
                elif _is_number(item):
                    found.append((path, True))
        if _is_number(info.annotation):
            found.append((path, False))
    return found


def _raw_with(path: str, value: object, as_list: bool) -> dict:
    data: dict = {}
    if "[0]." in path:  # a list of sections: one entry, built from its defaults, with the bad value
        outer, inner = path.split("[0].", 1)
        entry: dict = {"kind": "noise"} if outer.endswith("defences") else {}
        set_dotted(entry, inner, [value] if as_list else value)
        set_dotted(data, outer, [entry])
        return data
    set_dotted(data, path, [value] if as_list else value)
    return data


FIELDS = numeric_fields()


def test_the_walk_finds_every_section():
    paths = {p for p, _ in FIELDS}
    assert len(paths) > 80
    for expected in (
        "training.weight_decay",
        "training.lr",
        "world.factors.financial_chain",
        "federation.horizontal.secagg.num_shares",
        "federation.horizontal.dp.target_epsilon",
        "audit.label_leakage.defences[0].strength",
        "audit.membership.target_fpr",
        "model.hidden",
        "seeds",
    ):
        assert expected in paths


def test_defaults_are_valid():
    ExperimentConfig()


@pytest.mark.parametrize(("path", "as_list"), FIELDS, ids=[p for p, _ in FIELDS])
def test_numeric_field_rejects_non_finite_negative_and_huge_values(path: str, as_list: bool):
    for value in BAD_VALUES:
        if value == float("inf") and path in INF_MEANS_OFF:
            continue
        with pytest.raises(FedriskError) as info:
            validate(_raw_with(path, value, as_list))
        message = str(info.value)
        assert "\n" not in message
        # the error names the field itself (lists: its first entry, ".0"), or a section check names it
        named = info.value.field.startswith(path.replace("[0]", ".0"))
        assert named or path.rsplit(".", 1)[-1] in message, (path, value, message)


def test_field_bounds_are_declared_not_only_checked_later():
    """Each plain number field carries an upper bound in its schema (so the config reference shows it)."""
    unbounded = []

    def visit(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            for member in _members(info.annotation):
                if isinstance(member, type) and issubclass(member, BaseModel):
                    visit(member, f"{prefix}{name}.")
                if typing.get_origin(member) is list:
                    for item in _members(typing.get_args(member)[0]):
                        if isinstance(item, type) and issubclass(item, BaseModel):
                            visit(item, f"{prefix}{name}[0].")
            if _is_number(info.annotation) and not _has_upper(info):
                unbounded.append(f"{prefix}{name}")

    visit(ExperimentConfig, "")
    # validated by their own rules instead: seeds (< 2**32), the SecAgg+ share counts (<= 999), dp target ε
    assert set(unbounded) <= {
        "federation.horizontal.secagg.num_shares",
        "federation.horizontal.secagg.reconstruction_threshold",
        "federation.horizontal.dp.target_epsilon",
    }, unbounded


def _has_upper(info: FieldInfo) -> bool:
    if any(hasattr(m, "le") or hasattr(m, "lt") for m in info.metadata):
        return True
    return any(
        typing.get_origin(a) is typing.Annotated
        and any(hasattr(m, "le") or hasattr(m, "lt") for m in getattr(typing.get_args(a)[1], "metadata", []))
        for a in typing.get_args(info.annotation)
    )


@pytest.mark.parametrize("value", ["1e30", "inf", "nan", "-0.1"])
def test_cli_weight_decay_out_of_range_is_one_line_exit_2_and_no_folder(tmp_path: Path, capfd, value: str):
    config = tmp_path / "c.toml"
    config.write_text("seeds = [0]\n[world]\nn_firms = 2000\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = [
        "fedrisk",
        "run",
        str(config),
        "--out",
        str(out),
        "--quiet",
        "--set",
        f"training.weight_decay={value}",
    ]
    old = sys.argv
    sys.argv = argv
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    finally:
        sys.argv = old
    err = capfd.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err.count("\n") == 0 and "training.weight_decay" in err and "Traceback" not in err
    assert not out.exists()
