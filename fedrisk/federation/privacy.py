"""The privacy accountant: ε after T rounds of the (sub)sampled Gaussian mechanism, and its inverse.

Client-level DP: the protected unit is a whole bank. Each round releases the (clipped, noised) mean of
the sampled banks' updates, i.e. one Gaussian mechanism with noise multiplier ``z`` applied to a
sample of the banks. We compose ``rounds`` such events with Google's ``dp_accounting`` RDP accountant
(the analysis of DP-FedAvg, McMahan et al. 2018) and solve for ``z`` given a target ε with its
``calibrate_dp_mechanism``. Nothing here is hand-rolled privacy math.

Sampling: Flower samples a fixed number of banks per round; with ``sampling="poisson"`` we account for it
as Poisson sampling at rate ``fraction_fit`` (the usual DP-FedAvg approximation), with ``"none"`` we
claim no amplification. At ``fraction_fit = 1`` the two are identical and exact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import dp_accounting
from dp_accounting import rdp

from fedrisk.core.errors import FedriskError

_SIGMA_BRACKET = dp_accounting.ExplicitBracketInterval(1e-3, 1e4)


@dataclass(frozen=True)
class PrivacyBudget:
    """What a run spent, as reported in its outcome.

    Parameters
    ----------
    epsilon : float or None
        Total ε after all rounds (None = no DP).
    delta : float or None
        The δ that ε is stated at.
    noise_multiplier : float or None
        Gaussian noise std over the clipping norm.
    rounds : int
        Releases composed.
    sampling_rate : float
        Per-round sampling rate used for amplification (1.0 = none claimed).
    accountant : str
        How ε was computed.
    """

    epsilon: float | None
    delta: float | None
    noise_multiplier: float | None
    rounds: int
    sampling_rate: float
    accountant: str = "dp_accounting RDP, subsampled Gaussian, add/remove-one bank"

    def as_dict(self) -> dict:
        return asdict(self)


def _event(noise_multiplier: float, rounds: int, sampling_rate: float) -> dp_accounting.DpEvent:
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    per_round = (
        gaussian if sampling_rate >= 1.0 else dp_accounting.PoissonSampledDpEvent(sampling_rate, gaussian)
    )
    return dp_accounting.SelfComposedDpEvent(per_round, rounds)


def _check(rounds: int, sampling_rate: float, delta: float) -> None:
    if rounds < 1:
        raise FedriskError("federation.horizontal.rounds", f"{rounds} rounds", "use at least 1 round")
    if not 0.0 < sampling_rate <= 1.0:
        raise FedriskError(
            "federation.horizontal.fraction_fit", f"sampling rate {sampling_rate}", "use (0, 1]"
        )
    if not 0.0 < delta < 1.0:
        raise FedriskError("federation.horizontal.dp.delta", f"{delta} is not in (0, 1)", "use e.g. 1e-5")


def epsilon(noise_multiplier: float, rounds: int, sampling_rate: float, delta: float) -> float:
    """Total ε at ``delta`` after ``rounds`` sampled Gaussian releases with ``noise_multiplier``."""
    _check(rounds, sampling_rate, delta)
    if noise_multiplier <= 0:
        return math.inf
    accountant = rdp.RdpAccountant()
    accountant.compose(_event(noise_multiplier, rounds, sampling_rate))
    return float(accountant.get_epsilon(delta))


def noise_multiplier_for(target_epsilon: float, rounds: int, sampling_rate: float, delta: float) -> float:
    """Smallest noise multiplier whose ε after ``rounds`` is at most ``target_epsilon`` (accountant-solved)."""
    _check(rounds, sampling_rate, delta)
    if not target_epsilon > 0:
        raise FedriskError(
            "federation.horizontal.dp.target_epsilon", f"{target_epsilon}", "use ε > 0 or 'inf'"
        )
    try:
        return float(
            dp_accounting.calibrate_dp_mechanism(
                rdp.RdpAccountant,
                lambda z: _event(z, rounds, sampling_rate),
                target_epsilon,
                delta,
                bracket_interval=_SIGMA_BRACKET,
                tol=1e-4,
            )
        )
    except (ValueError, dp_accounting.UnsupportedEventError) as exc:
        raise FedriskError(
            "federation.horizontal.dp.target_epsilon",
            f"no noise multiplier in [1e-3, 1e4] reaches ε = {target_epsilon} at δ = {delta} ({exc})",
            "raise the target ε or δ, or lower the rounds",
        ) from None


def budget_for(
    mode: str,
    noise_multiplier: float | None,
    target_epsilon: float | str | None,
    rounds: int,
    fraction_fit: float,
    delta: float,
    sampling: str = "poisson",
) -> PrivacyBudget:
    """Resolve a DP section into the noise to add and the ε to report.

    ``local`` mode: each bank noises its own update before the server sees it, so sampling hides
    nothing and every round a bank takes part in counts (we charge all ``rounds``).
    """
    if mode == "none" or target_epsilon == "inf":
        return PrivacyBudget(None, None, None, rounds, 1.0, "none")
    rate = fraction_fit if (sampling == "poisson" and mode != "local") else 1.0
    if noise_multiplier is None:
        noise_multiplier = noise_multiplier_for(float(target_epsilon), rounds, rate, delta)
    eps = epsilon(noise_multiplier, rounds, rate, delta)
    return PrivacyBudget(eps, delta, noise_multiplier, rounds, rate)
