"""The accountant: ε from dp_accounting's RDP accountant, and the noise solved for a target ε."""

from __future__ import annotations

import math

import pytest

import fedrisk  # noqa: F401
from fedrisk.federation import privacy


def test_epsilon_decreases_as_noise_grows():
    eps = [privacy.epsilon(z, rounds=20, sampling_rate=1.0, delta=1e-5) for z in (0.5, 1.0, 2.0, 4.0, 8.0)]
    assert all(a > b for a, b in zip(eps, eps[1:], strict=False))


def test_subsampling_and_fewer_rounds_spend_less():
    full = privacy.epsilon(2.0, rounds=20, sampling_rate=1.0, delta=1e-5)
    assert privacy.epsilon(2.0, rounds=20, sampling_rate=0.3, delta=1e-5) < full
    assert privacy.epsilon(2.0, rounds=5, sampling_rate=1.0, delta=1e-5) < full


@pytest.mark.parametrize("target", [1.0, 3.0, 8.0])
def test_solved_noise_meets_the_target(target):
    z = privacy.noise_multiplier_for(target, rounds=20, sampling_rate=1.0, delta=1e-5)
    assert privacy.epsilon(z, 20, 1.0, 1e-5) <= target + 1e-6
    assert privacy.epsilon(z * 0.97, 20, 1.0, 1e-5) > target  # and is not needlessly large


def test_agrees_with_flowers_own_accountant():
    from flwr.serverapp import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )

    config = PrivacyConfig(1e-5, 10, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION)
    flower = RdpAccountant(config)
    flower.compose(GaussianPrivacyEvent(1.5, 10, 10), 12)
    assert privacy.epsilon(1.5, 12, 1.0, 1e-5) == pytest.approx(flower.get_epsilon(1e-5), rel=1e-9)


def test_budget_without_dp_is_none_and_local_mode_claims_no_amplification():
    assert privacy.budget_for("server-fixed", None, "inf", 10, 0.5, 1e-5).epsilon is None
    local = privacy.budget_for("local", 2.0, None, 10, 0.5, 1e-5)
    central = privacy.budget_for("server-fixed", 2.0, None, 10, 0.5, 1e-5)
    assert local.sampling_rate == 1.0 and central.sampling_rate == 0.5
    assert local.epsilon > central.epsilon
    assert math.isfinite(central.epsilon)
