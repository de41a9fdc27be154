"""How banks' updates are protected in `[federation.horizontal]`: SecAgg+ and differential privacy.

Both wrap Flower's own machinery (``flwr.serverapp.workflow`` SecAgg+, ``flwr.serverapp.strategy`` DP
wrappers); these models only validate the knobs so a bad value is refused before any federation starts.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
