"""The experiment config: one TOML file, validated once at the edge into typed objects.

Each section's model lives beside the code that uses it (``WorldConfig`` in ``fedrisk.data.synthetic``,
``VerticalConfig``/``HorizontalConfig`` in ``fedrisk.federation``); this module composes them, applies
``--set`` overrides and sweep points, and turns pydantic's errors into one line that names the field.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedrisk.config.audit import AuditConfig
from fedrisk.config.horizontal import HorizontalConfig
from fedrisk.config.model import ModelConfig, TrainConfig
from fedrisk.config.vertical import PROTECTIONS, VerticalConfig
from fedrisk.config.world import WorldConfig
from fedrisk.core.errors import FedriskError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PartySource(_Section):
    """One holder's real table (CSV or Parquet)."""

    name: str = Field(description="The holder's name (e.g. 'bank', 'tax'); unique.")
    path: Path = Field(description="CSV or Parquet file, relative to the config file.")
    id: str = Field("firm_id", description="Column with the firm identifier shared across holders.")
    label: str | None = Field(None, description="Binary 0/1 outcome column; only label holders have one.")


class DataConfig(_Section):
    """Where the parties' tables come from."""

    source: Literal["synthetic", "tables"] = Field(
        "synthetic", description="'synthetic' (the [world] generator) or 'tables' (one file per party)."
    )
    parties: list[PartySource] = Field(default_factory=list, description="The tables when source = 'tables'.")
    partners: list[str] | None = Field(
        None,
        description="Vertical: which non-label holders join (e.g. ['tax']); None = all. Sweep it to add holders one at a time.",
    )
    min_overlap: int = Field(
        100,
        ge=1,
        le=10**9,
        description="Vertical: fewest firms each partner must share with the label holder; fewer is refused "
        "(an overlap that small is usually a wrong id column or format, and too few to learn from).",
    )

    @model_validator(mode="after")
    def _parties_match_source(self) -> DataConfig:
        if self.source == "tables" and not self.parties:
            raise ValueError("source = 'tables' needs at least one [[data.parties]] entry")
        names = [p.name for p in self.parties]
        if len(set(names)) != len(names):
            raise ValueError(f"party names must be unique (got {names})")
        return self


class SplitConfig(_Section):
    """How the label holder splits its applicants (every method is scored on the same test applicants)."""

    test_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="Share of applicants held out for testing.")
    val_fraction: float = Field(
        0.15, gt=0.0, lt=1.0, description="Share of the remaining applicants for early stopping and tuning."
    )
    out_of_time: bool = Field(
        True, description="Score the later cohort (if the data has one) as a separate 'oot' test split."
    )
    accepted_only: bool = Field(
        False,
        description="Train and validate only on applicants the bank's past policy approved (the test still "
        "covers everyone): shows the selection bias of learning from approvals. Synthetic world only.",
    )


class FederationConfig(_Section):
    """How federated training runs."""

    backend: Literal["inprocess", "ray"] = Field(
        "inprocess",
        description="'inprocess' (Flower apps called directly: fast) or 'ray' (Flower's simulation engine).",
    )
    ray_address: str | None = Field(
        None,
        description="backend 'ray' on an existing Ray cluster: 'auto' (the cluster this machine joined, "
        "`ray start`) or its head's 'host:port'; empty = a local Ray started for the run.",
    )
    vertical: VerticalConfig = Field(default_factory=VerticalConfig)
    horizontal: HorizontalConfig = Field(default_factory=HorizontalConfig)

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, value: str | None) -> str | None:
        if value is None or value == "auto" or re.fullmatch(r"(ray://)?\[?[\w.:-]+?\]?:\d{1,5}", value):
            return value
        raise ValueError(
            f"{value!r} is neither 'auto' nor a Ray head address 'host:port' (e.g. '10.0.0.5:6379')"
        )

    @model_validator(mode="after")
    def _ray_address_needs_ray(self) -> FederationConfig:
        if self.ray_address is not None and self.backend != "ray":
            raise ValueError(
                f"ray_address is set but backend is {self.backend!r}; set federation.backend = 'ray' "
                "(or remove federation.ray_address)"
            )
        return self


class EvaluationConfig(_Section):
    """Metrics and confidence intervals."""

    approval_rate: float = Field(
        0.8, gt=0.0, le=1.0, description="Approval rate at which the bad rate among approved is reported."
    )
    n_bootstrap: int = Field(
        400, ge=0, le=100_000, description="Bootstrap replicates for confidence intervals."
    )
    ci_level: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of every interval.")
    reference_models: bool = Field(
        True,
        description="Also fit scikit-learn LogisticRegression/HistGradientBoosting on pooled data "
        "(a check that centralized is a real upper bound).",
    )


class RunnerConfig(_Section):
    """How the runner schedules work."""

    workers: int = Field(
        2, ge=1, le=64, description="Parallel worker processes for independent (point, seed) units."
    )
    flower_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="Level of Flower's own log (INFO prints every round of every federated run)."
    )
    private_outputs: bool = Field(
        False,
        description="Make the results directory owner-only (0700), e.g. for real customer tables; "
        "otherwise files follow your umask (0644 typically).",
    )


class ExperimentConfig(_Section):
    """A whole experiment. Every section is optional; defaults give the vertical KS-uplift experiment."""

    name: str = Field("experiment", description="Name used for the results directory.")
    topology: Literal["auto", "vertical", "horizontal"] = Field(
        "auto",
        description="'auto' follows the data: one bank (one labelled table) -> vertical, several -> horizontal.",
    )
    seeds: list[int] = Field(
        [0, 1, 2, 3, 4], min_length=1, description="Seeds; each gives a new world and split."
    )
    world: WorldConfig = Field(default_factory=WorldConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainConfig = Field(default_factory=TrainConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Grid to vary: dotted key -> list of values, e.g. 'world.supply_chain.coverage' = [0.2, 0.6].",
    )

    @model_validator(mode="after")
    def _protection_applies(self) -> ExperimentConfig:
        """A label protection that does not apply to the model or topology is refused before any work."""
        protection = self.federation.vertical.protection
        if protection == "none":
            return self
        field = "federation.vertical.protection"
        horizontal = self.topology == "horizontal" or (
            self.topology == "auto" and self.data.source == "synthetic" and self.world.n_banks > 1
        )
        if horizontal:
            raise FedriskError(
                field,
                f"{protection!r} protects a vertical run's labels, but this run is horizontal",
                "use protection = 'none' (horizontal runs have federation.horizontal.dp and secagg)",
            )
        kind = self.model.kind
        if protection == "he" and kind not in ("logistic", "gbdt"):
            raise FedriskError(
                field,
                f"'he' encrypts vertical logistic regression's or trees' gradients; model.kind is {kind!r}",
                "use model.kind = 'logistic' or 'gbdt', or protection = 'noise' or 'label_dp' for the split-NN",
            )
        if protection == "he" and kind == "gbdt" and self.federation.vertical.he_scheme != "paillier":
            raise FedriskError(
                "federation.vertical.he_scheme",
                "model.kind = 'gbdt' encrypts with packed Paillier (SecureBoost), not CKKS",
                "set he_scheme = 'paillier' (and he_key_bits = 1024, 2048 or 3072 if not 2048)",
            )
        if protection in ("noise", "label_dp") and kind not in ("logistic", "mlp"):
            raise FedriskError(
                field,
                f"{protection!r} protects split training (logistic or mlp); model.kind is {kind!r}",
                f"use protection in {list(PROTECTIONS[:2])} with this model",
            )
        return self

    @model_validator(mode="after")
    def _training_applies_to_the_model(self) -> ExperimentConfig:
        """``[training]`` drives the neural models' optimiser; trees have their own keys in ``[model]``.

        A key set to a non-default value under ``model.kind = "gbdt"`` is refused rather than ignored
        (non-default: the apps re-validate a full dump of the config)."""
        if self.model.kind != "gbdt":
            return self
        defaults = type(self.training).model_fields
        changed = [
            k
            for k in sorted(self.training.model_fields_set)
            if getattr(self.training, k) != defaults[k].default
        ]
        if changed:
            raise FedriskError(
                f"training.{changed[0]}",
                "[training] sets the optimiser of logistic and MLP models; model.kind = 'gbdt' does not use it",
                "remove it, or set the trees' own keys in [model] (n_trees, learning_rate, early_stopping_rounds)",
            )
        return self

    @model_validator(mode="after")
    def _split_network_follows_the_model(self) -> ExperimentConfig:
        """The vertical split-NN's bottoms take ``model.hidden``/``model.dropout`` unless set on their own."""
        vertical = self.federation.vertical
        if vertical.bottom_hidden is None:
            vertical.bottom_hidden = list(self.model.hidden)
        if vertical.dropout is None:
            vertical.dropout = self.model.dropout
        return self

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        if any(not 0 <= s < 2**32 for s in seeds):  # numpy's and scikit-learn's seed range
            raise ValueError("seeds must be integers in [0, 4294967295]")
        return seeds


# ---------------------------------------------------------------------------------------------------------
# Loading, overrides, sweeps


def read_toml(path: Path) -> dict:
    if not path.exists():
        raise FedriskError("CONFIG", f"file not found: {path}", "pass the path of an experiment TOML file")
    if path.is_dir():
        raise FedriskError("CONFIG", f"{path} is a directory", "pass the path of an experiment TOML file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise FedriskError("CONFIG", f"{path} is not valid TOML ({exc})", "fix the TOML syntax") from None
    except UnicodeDecodeError:
        raise FedriskError("CONFIG", f"{path} is not UTF-8 text", "save the config as UTF-8 TOML") from None
    except OSError as exc:
        raise FedriskError(
            "CONFIG", f"cannot read {path} ({exc.strerror})", "check the file's permissions"
        ) from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"federation.rounds=5"`` -> ``("federation.rounds", 5)``; values are TOML, else plain strings."""
    if "=" not in text:
        raise FedriskError("--set", f"{text!r} is not KEY=VALUE", "write e.g. --set world.n_firms=20000")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise FedriskError("--set", f"{text!r} has an empty key", "write e.g. --set world.n_firms=20000")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def set_dotted(data: dict, key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise FedriskError(key, f"'{part}' is a value, not a section", "check the dotted key")
        node = child
    node[parts[-1]] = value


def validate(data: dict, source: str = "config") -> ExperimentConfig:
    """Validate a raw dict, turning the first pydantic error into a one-line `FedriskError`."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise _to_fedrisk_error(exc, source) from None


def _to_fedrisk_error(exc: ValidationError, source: str) -> FedriskError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p)) or source
    kind = err["type"]
    if kind == "extra_forbidden":
        section = _section_for(err["loc"][:-1])
        valid = sorted(section.model_fields) if section is not None else []
        return FedriskError(field, "unknown key", f"remove it or use one of: {', '.join(valid)}")
    given = err.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return FedriskError(field, f"{err['msg']}{shown}", "see the config reference in the README")


def _is_union_tag(part: object) -> bool:
    """pydantic names the union member that failed in the location (``int``, ``constrained-float``)."""
    return isinstance(part, str) and (part in ("int", "float", "str", "bool") or "-" in part or "[" in part)


def _section_for(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        info = model.model_fields.get(str(part))
        annotation = getattr(info, "annotation", None) if info else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return model if info is None else None
    return model


def load_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[ExperimentConfig, dict]:
    """Read, override and validate; returns the config and the raw (overridden) dict it came from."""
    data = read_toml(path)
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(data, key, value)
    config = validate(data, str(path))
    config = _resolve_paths(config, path.parent)
    for key in config.sweep:
        _check_sweep_key(data, key)
    return config, data


def _resolve_paths(config: ExperimentConfig, base: Path) -> ExperimentConfig:
    for party in config.data.parties:
        if not party.path.is_absolute():
            party.path = (base / party.path).resolve()
    return config


def _check_sweep_key(data: dict, key: str) -> None:
    if key.split(".")[0] in ("sweep", "seeds", "name"):
        raise FedriskError(
            f"sweep.{key}", "cannot be swept", "sweep model, world, training or federation keys"
        )
    values = data["sweep"][key]
    if not isinstance(values, list) or not values:
        raise FedriskError(f"sweep.{key}", "needs a non-empty list of values", f'write "{key}" = [v1, v2]')
    for value in values:
        probe = copy.deepcopy(data)
        probe.pop("sweep", None)
        set_dotted(probe, key, value)
        try:
            ExperimentConfig.model_validate(probe)
        except ValidationError as exc:
            inner = _to_fedrisk_error(exc, key)
            raise FedriskError(
                f"sweep.{key}", f"value {value!r} is invalid ({inner})", "fix the sweep values"
            ) from None
