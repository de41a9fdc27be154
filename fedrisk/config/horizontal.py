"""The `[federation.horizontal]` section: how several banks train one model with Flower.

Validated once at the edge; the driver, the ServerApp and the ClientApps take this object (the apps get
it as JSON in Flower's run config, whose values must be scalars). Strategies are Flower's Message-API
strategies (``flwr.serverapp.strategy``), chosen by name; their parameters are checked against the
strategy's signature before any federation starts (`fedrisk.federation.strategies.check_params`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

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


class SecAggConfig(BaseModel):
    """SecAgg+ (Flower's ``SecAggPlusWorkflow`` + ``secaggplus_mod``): the server sees only the sum.

    Parameters
    ----------
    enabled : bool, default=False
        Aggregate model updates (and the preprocessing statistics) under SecAgg+.
    num_shares : int or float, default=3
        Shares each client's secret is split into: an odd integer >= 3, or a fraction of the sampled
        clients in (0, 1]. Flower's protocol needs an odd count (with an even integer every client fails).
    reconstruction_threshold : int or float, default=2
        Shares needed to reconstruct a secret: an integer below ``num_shares`` or a fraction in (0, 1].
    clipping_range : float, default=8.0
        Each weighted parameter is clipped to ``[-clipping_range, clipping_range]`` before quantisation;
        a client whose parameters exceed it fails the run rather than being silently clipped.
    quantization_range : int, default=2**22
        Integer levels per parameter; the aggregation error is about
        ``n_clients * 2 * clipping_range / quantization_range`` (see `fedrisk.federation.horizontal_server`).
    modulus_range : int, default=2**32
        Mask modulus, a power of two above ``quantization_range * n_clients``.
    max_weight : float or None, default=None
        Largest client weight (training rows) the protocol expects; None = the largest bank's training
        rows (1 under DP, where every client has weight 1).
    timeout : float or None, default=None
        Seconds to wait for replies in each stage (None = wait for all).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(False, description="Aggregate under SecAgg+ (the server sees only the sum).")
    num_shares: int | float = Field(
        3, description="Odd integer >= 3, or a fraction of the sampled clients in (0, 1]."
    )
    reconstruction_threshold: int | float = Field(
        2, description="Shares to reconstruct a secret: integer < num_shares, or a fraction in (0, 1]."
    )
    clipping_range: float = Field(8.0, gt=0.0, le=1e6, description="Weighted parameters must lie in [-r, r].")
    quantization_range: int = Field(2**22, gt=1, le=2**48, description="Integer levels per parameter.")
    modulus_range: int = Field(2**32, gt=1, le=2**62, description="Mask modulus (a power of two).")
    max_weight: float | None = Field(
        None,
        gt=0.0,
        le=1e12,
        description="Largest client weight; empty = largest bank's training rows (1 under DP).",
    )
    timeout: float | None = Field(
        None, gt=0.0, le=86_400.0, description="Seconds to wait for replies per stage."
    )

    @field_validator("num_shares")
    @classmethod
    def _odd_shares(cls, value: int | float) -> int | float:
        if isinstance(value, float):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"a fractional num_shares must be in (0, 1], got {value}")
            return value
        if value > 999:
            raise ValueError(f"num_shares = {value}: at most 999 (one share per client)")
        if value < 3 or value % 2 == 0:
            raise ValueError(
                f"num_shares = {value}: SecAgg+ needs an odd integer >= 3 (with an even count every client "
                f"fails with IndexError); use {max(3, value + 1 if value % 2 == 0 else value)} or a fraction like 1.0"
            )
        return value

    @model_validator(mode="after")
    def _threshold_and_ranges(self) -> SecAggConfig:
        t = self.reconstruction_threshold
        if isinstance(t, float):
            if not 0.0 < t <= 1.0:
                raise ValueError(f"a fractional reconstruction_threshold must be in (0, 1], got {t}")
        elif not 1 <= t <= 999:
            raise ValueError(f"reconstruction_threshold must be in [1, 999], got {t}")
        elif isinstance(self.num_shares, int) and t >= self.num_shares:
            raise ValueError(f"reconstruction_threshold ({t}) must be below num_shares ({self.num_shares})")
        if self.modulus_range & (self.modulus_range - 1):
            raise ValueError(f"modulus_range must be a power of two, got {self.modulus_range}")
        if self.modulus_range <= self.quantization_range:
            raise ValueError("modulus_range must exceed quantization_range")
        return self


DpMode = Literal["none", "server-fixed", "server-adaptive", "client-fixed", "client-adaptive", "local"]


class DPConfig(BaseModel):
    """Differential privacy at the level of a whole bank (client-level DP), with Flower's wrappers and mods.

    Parameters
    ----------
    mode : str, default="none"
        ``server-fixed`` / ``server-adaptive``: Flower's server-side clipping wrappers;
        ``client-fixed`` / ``client-adaptive``: the client-side wrappers with Flower's clipping mods;
        ``local``: Flower's ``LocalDpMod`` (each bank noises its own update; no trusted server).
    noise_multiplier : float or None
        Gaussian noise standard deviation over the clipping norm. Give this or ``target_epsilon``.
    target_epsilon : float or "inf" or None
        Total ε after all rounds; the noise multiplier is solved with the accountant. ``"inf"`` turns
        DP off entirely (no clipping, no noise): the run equals the non-DP run.
    delta : float, default=1e-5
        The δ of (ε, δ)-DP; keep it below 1 / number of banks.
    clipping_norm : float, default=1.0
        L2 bound on each bank's model update (the initial bound for the adaptive modes).
    target_clipped_quantile, clip_norm_lr, clipped_count_stddev
        Adaptive clipping (Andrew et al. 2021), passed to Flower's adaptive wrappers.
    sampling : {"poisson", "none"}, default="poisson"
        Privacy amplification model: ``poisson`` treats Flower's per-round sampling of
        ``fraction_fit`` of the banks as Poisson sampling at that rate (the usual DP-FedAvg analysis);
        ``none`` claims no amplification (the conservative choice for Flower's fixed-size sampling).
        Identical when ``fraction_fit = 1``.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: DpMode = Field(
        "none", description="none | server-fixed | server-adaptive | client-fixed | client-adaptive | local."
    )
    noise_multiplier: float | None = Field(
        None, ge=0.0, le=1e4, description="Noise std / clipping norm; give this or target_epsilon."
    )
    target_epsilon: Annotated[float, Field(gt=0.0, le=1e6)] | Literal["inf"] | None = Field(
        None, description="Total ε after all rounds (noise solved by the accountant); 'inf' = DP off."
    )
    delta: float = Field(1e-5, gt=0.0, lt=1.0, description="δ of (ε, δ)-DP; below 1 / number of banks.")
    clipping_norm: float = Field(
        1.0, gt=0.0, le=1e6, description="L2 bound on a bank's update (adaptive: initial bound)."
    )
    target_clipped_quantile: float = Field(
        0.5, ge=0.0, le=1.0, description="Adaptive clipping: share of updates the bound should not clip."
    )
    clip_norm_lr: float = Field(
        0.2, gt=0.0, le=10.0, description="Adaptive clipping: learning rate of the bound."
    )
    clipped_count_stddev: float | None = Field(
        None,
        ge=0.0,
        le=1e6,
        description="Adaptive clipping: noise on the clipped count; empty = Flower's default.",
    )
    sampling: Literal["poisson", "none"] = Field(
        "poisson", description="Amplification by sampling: 'poisson' at rate fraction_fit, or 'none'."
    )

    @field_validator("target_epsilon", mode="before")
    @classmethod
    def _inf_spelling(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("inf", "infinity", "∞"):
            return "inf"
        if isinstance(value, float) and math.isinf(value) and value > 0:
            return "inf"
        return value

    @model_validator(mode="after")
    def _one_noise_source(self) -> DPConfig:
        if self.mode == "none" or self.target_epsilon == "inf":
            return self
        given = (self.noise_multiplier is not None) + (self.target_epsilon is not None)
        if given != 1:
            raise ValueError(
                f"dp.mode = '{self.mode}' needs exactly one of noise_multiplier or target_epsilon (got {given})"
            )
        if self.target_epsilon is not None and self.target_epsilon <= 0:
            raise ValueError(f"target_epsilon must be > 0 (or 'inf'), got {self.target_epsilon}")
        if self.mode != "local" and self.noise_multiplier == 0:
            raise ValueError("noise_multiplier = 0 gives no privacy; use mode = 'none' instead")
        return self

    @property
    def active(self) -> bool:
        """True when clipping and noise are applied (a mode is set and ε is not infinite)."""
        return self.mode != "none" and self.target_epsilon != "inf"


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
