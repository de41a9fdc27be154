"""`federation.vertical.protection`: applies only where it can, and every knob belongs to one protection."""

from __future__ import annotations

import pytest

from fedrisk.config import validate
from fedrisk.core.errors import FedriskError


def _vertical(**keys) -> dict:
    return {"federation": {"vertical": keys}}


@pytest.mark.parametrize(
    "data",
    [
        _vertical(protection="he"),
        _vertical(protection="he", he_scheme="paillier", he_key_bits=2048),
        {"model": {"kind": "mlp"}, **_vertical(protection="noise", noise_multiplier=0.5)},
        {"model": {"kind": "mlp"}, **_vertical(protection="label_dp", label_dp_epsilon=1.0)},
        {"world": {"n_banks": 3}, **_vertical(protection="none")},
    ],
)
def test_protections_that_apply_are_accepted(data):
    assert validate(data).federation.vertical.protection == data["federation"]["vertical"]["protection"]


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (
            {"model": {"kind": "mlp"}, **_vertical(protection="he")},
            "federation.vertical.protection",
            "logistic",
        ),
        (
            {"world": {"n_banks": 3}, **_vertical(protection="noise")},
            "federation.vertical.protection",
            "horizontal",
        ),
        (
            {"topology": "horizontal", **_vertical(protection="he")},
            "federation.vertical.protection",
            "horizontal",
        ),
        (_vertical(protection="he", noise_multiplier=2.0), "federation.vertical.noise_multiplier", "'noise'"),
        (_vertical(label_dp_epsilon=1.0), "federation.vertical.label_dp_epsilon", "'label_dp'"),
        (_vertical(protection="he", he_key_bits=4096), "federation.vertical.he_key_bits", "8192"),
        (
            _vertical(protection="he", he_scheme="paillier", he_key_bits=8192),
            "federation.vertical.he_key_bits",
            "2048",
        ),
        (_vertical(protection="secret"), "federation.vertical.protection", "'label_dp'"),
    ],
)
def test_protections_that_do_not_apply_are_refused_naming_the_key(data, field, words):
    with pytest.raises(FedriskError) as err:
        validate(data)
    assert err.value.field == field and words in str(err.value)
