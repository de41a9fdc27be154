"""The `[federation.horizontal]` section: how several banks train one model with Flower.

Validated once at the edge; the driver, the ServerApp and the ClientApps take this object (the apps get
it as JSON in Flower's run config, whose values must be scalars). Strategies are Flower's Message-API
strategies (``flwr.serverapp.strategy``), chosen by name; their parameters are checked against the
strategy's signature before any federation starts (`fedrisk.federation.strategies.check_params`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from fedrisk.config.horizontal_protection import DPConfig, SecAggConfig
from fedrisk.config.model import TrainConfig
from fedrisk.config.personalization import PersonalConfig, Personalization
from fedrisk.core.errors import FedriskError

STRATEGY_NAMES = (
    "fedavg",
    "fedprox",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
)
"""Flower strategies by the name a config uses (the classes are looked up in `fedrisk.federation.strategies`)."""

LEGACY_PARAMS = {"num_malicious_clients": "num_malicious_nodes", "num_clients_to_keep": "num_nodes_to_select"}
"""Parameter names of Flower's legacy strategies that configs written before the Message API may still use:
renamed on load (legacy Krum with ``num_clients_to_keep`` was MultiKrum, and becomes ``multikrum``)."""

MEAN_BASED = frozenset({"fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"})
"""Strategies whose aggregate is a (weighted) mean of client models, possibly followed by a server optimiser.
Only those compose with SecAgg+ (which reveals nothing but the sum) and with the DP wrappers (whose noise is
calibrated to the sensitivity of a mean)."""

MIN_CLIENTS = {
    "krum": lambda p: 2 * p.get("num_malicious_nodes", 0) + 3,
    "multikrum": lambda p: 2 * p.get("num_malicious_nodes", 0) + 3,
    "bulyan": lambda p: 4 * p.get("num_malicious_nodes", 0) + 3,
}
"""Fewest clients a robust rule needs, from its parameters (checked when the run starts)."""


class HorizontalConfig(BaseModel):
    """Several banks train one model: Flower strategy, rounds, SecAgg+ and DP.

    Parameters
    ----------
    strategy : str, default="fedavg"
        A Flower strategy by name (see ``STRATEGY_NAMES``).
    strategy_params : dict
        Keyword arguments of that strategy (e.g. ``proximal_mu`` for FedProx, ``eta`` for FedAdam),
        checked against Flower's signature.
    rounds : int, default=20
        Federated rounds at most; ``rounds * local_epochs`` may not exceed ``training.epochs`` (the
        baselines' cap on passes over the training rows holds for every bank), and ``training.patience``
        stops the federation early (see `rounds_budget`).
    local_epochs : int, default=1
        Passes over its own training rows each bank makes per round.
    fraction_fit, fraction_evaluate : float
        Share of banks sampled per round for training / federated evaluation.
    max_categories : int, default=20
        One-hot levels per categorical column (the rarest are grouped), as in the siloed preprocessing.
    keep : {"best", "last"}, default="best"
        Keep the global model of the round with the lowest federated validation loss, or the last one.
    secagg : SecAggConfig
    dp : DPConfig
    personalization : {"none", "finetune", "ditto", "clustered"}, default="none"
        Also give each bank a personalised model (the method ``personalized``); see
        `fedrisk.config.personalization`.
    personal : PersonalConfig
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strategy: str = Field("fedavg", description=f"Flower strategy: {', '.join(STRATEGY_NAMES)}.")
    strategy_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the strategy (checked against Flower's signature before the run starts).",
    )
    rounds: int = Field(20, ge=1, le=10_000, description="Federated rounds.")
    local_epochs: int = Field(
        1, ge=1, le=1000, description="Local passes over a bank's training rows per round."
    )
    fraction_fit: float = Field(1.0, gt=0.0, le=1.0, description="Share of banks sampled per training round.")
    fraction_evaluate: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of banks evaluating the global model each round (0 = none)."
    )
    max_categories: int = Field(20, ge=2, le=10_000, description="One-hot levels per categorical column.")
    keep: Literal["best", "last"] = Field(
        "best", description="Global model kept: lowest federated validation loss ('best') or the last round."
    )
    secagg: SecAggConfig = Field(default_factory=SecAggConfig)
    dp: DPConfig = Field(default_factory=DPConfig)
    personalization: Personalization = Field(
        "none", description="none | finetune | ditto | clustered: each bank also gets a personalised model."
    )
    personal: PersonalConfig = Field(default_factory=PersonalConfig)

    @model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, data: Any) -> Any:
        """Rename legacy Flower parameter names (`LEGACY_PARAMS`); legacy Krum keeping k becomes MultiKrum."""
        if not isinstance(data, Mapping) or not isinstance(data.get("strategy_params"), Mapping):
            return data
        params = {LEGACY_PARAMS.get(k, k): v for k, v in data["strategy_params"].items()}
        data = {**data, "strategy_params": params}
        if str(data.get("strategy", "")).lower() == "krum" and params.get("num_nodes_to_select"):
            data["strategy"] = "multikrum"
        return data

    @field_validator("strategy", mode="before")
    @classmethod
    def _known_strategy(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in STRATEGY_NAMES:
            return value.lower()
        raise ValueError(f"unknown strategy {value!r}; use one of: {', '.join(STRATEGY_NAMES)}")

    @model_validator(mode="after")
    def _compatible(self) -> HorizontalConfig:
        if self.strategy not in MEAN_BASED and (self.secagg.enabled or self.dp.active):
            what = "SecAgg+" if self.secagg.enabled else "differential privacy"
            raise ValueError(
                f"strategy '{self.strategy}' needs each bank's model in the clear, which {what} hides or "
                f"does not calibrate for; use a mean-based strategy "
                f"({', '.join(n for n in STRATEGY_NAMES if n in MEAN_BASED)})"
            )
        if self.secagg.enabled and self.dp.active and self.dp.mode.startswith("server-"):
            raise ValueError(
                f"dp.mode = '{self.dp.mode}' clips each bank's update on the server, which SecAgg+ hides "
                "(the server sees only the sum); use 'client-fixed' or 'client-adaptive' with SecAgg+"
            )
        if self.personalization == "clustered" and (self.secagg.enabled or self.dp.active):
            raise ValueError(
                "personalization = 'clustered' clusters the banks by their individual updates, which SecAgg+ "
                "hides and DP does not cover; use 'finetune' or 'ditto' (they never share the personal model)"
            )
        if self.keep == "best" and self.fraction_evaluate == 0:
            raise ValueError(
                "keep = 'best' needs federated evaluation; set fraction_evaluate > 0 or keep = 'last'"
            )
        return self

    def rounds_budget(self, train: TrainConfig) -> tuple[int, int]:
        """``(rounds, patience in rounds)`` under ``training.epochs`` and ``training.patience``.

        A bank passes ``local_epochs`` times over its rows per round, so the federation may not run more
        than ``training.epochs`` passes (the siloed and pooled models' cap), and stops once
        ``training.patience`` passes brought no federated validation-loss improvement (``min_delta``),
        i.e. after ``ceil(patience / local_epochs)`` such rounds (0 = never stops early).

        Raises
        ------
        FedriskError
            More rounds than the epochs allow, or early stopping without federated evaluation.
        """
        if self.rounds * self.local_epochs > train.epochs:
            raise FedriskError(
                "federation.horizontal.rounds",
                f"{self.rounds} rounds x {self.local_epochs} local epochs = {self.rounds * self.local_epochs} "
                f"passes over each bank's rows, more than training.epochs = {train.epochs}",
                f"raise training.epochs to {self.rounds * self.local_epochs} or lower rounds / local_epochs",
            )
        if train.patience and self.fraction_evaluate == 0:
            raise FedriskError(
                "training.patience",
                "early stopping needs the banks' federated validation loss, but fraction_evaluate = 0",
                "set training.patience = 0 or federation.horizontal.fraction_evaluate > 0",
            )
        return self.rounds, -(-train.patience // self.local_epochs)

    def min_clients(self) -> int:
        """Fewest banks the chosen strategy (and SecAgg+) can run with."""
        need = 2
        rule = MIN_CLIENTS.get(self.strategy)
        if rule is not None:
            need = max(need, rule(self.strategy_params))
        if self.secagg.enabled and isinstance(self.secagg.num_shares, int):
            need = max(need, self.secagg.num_shares)
        return need


class HorizontalJob(BaseModel):
    """Everything the ServerApp and the ClientApps need, shipped as one JSON string in Flower's run config.

    Built by the driver from the experiment config; ``noise_multiplier`` is the resolved one (solved
    from ``target_epsilon`` when that was given), ``max_weight`` the resolved SecAgg+ weight bound for
    training and ``max_rows`` the largest bank's training rows (the weight bound of the statistics round).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    horizontal: HorizontalConfig
    train: TrainConfig
    model_kind: Literal["logistic", "mlp"] = "logistic"
    hidden: list[int] = Field(default_factory=lambda: [32, 16])
    dropout: float = 0.0
    seed: int = 0
    noise_multiplier: float | None = None
    max_weight: float = 1000.0
    max_rows: int = 1000

    RUN_CONFIG_KEY: ClassVar[str] = "fedrisk-horizontal"

    def to_run_config(self) -> dict[str, str]:
        return {self.RUN_CONFIG_KEY: self.model_dump_json()}

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> HorizontalJob:
        if cls.RUN_CONFIG_KEY not in run_config:
            raise FedriskError(
                f"run_config.{cls.RUN_CONFIG_KEY}",
                "missing",
                "start the apps with fedrisk's horizontal driver",
            )
        return cls.model_validate_json(str(run_config[cls.RUN_CONFIG_KEY]))
