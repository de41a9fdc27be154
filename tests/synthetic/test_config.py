"""WorldConfig rejects bad knobs with a pydantic error that names the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fedrisk.data.synthetic import WorldConfig


@pytest.mark.parametrize(
    ("knobs", "field"),
    [
        ({"default_rate": 1.5}, "default_rate"),
        ({"n_firms": 0}, "n_firms"),
        ({"n_banks": 0}, "n_banks"),
        ({"tax": {"coverage": 1.2}}, "tax.coverage"),
        ({"supply_chain": {"contagion_steps": 7}}, "supply_chain.contagion_steps"),
        ({"banks": {"mix_concentration": 0.0}}, "banks.mix_concentration"),
    ],
)
def test_out_of_range_knobs_are_rejected_naming_the_field(knobs, field):
    with pytest.raises(ValidationError) as caught:
        WorldConfig(**knobs)
    locations = [".".join(str(part) for part in error["loc"]) for error in caught.value.errors()]
    assert field in locations


def test_unknown_knob_is_rejected():
    with pytest.raises(ValidationError, match="n_firm"):
        WorldConfig(n_firm=100)


def test_factor_correlations_must_be_positive_definite():
    with pytest.raises(ValidationError, match="positive-definite"):
        WorldConfig(factors={"financial_operating": 0.9, "financial_chain": 0.9, "operating_chain": -0.9})


def test_every_knob_is_documented():
    def undocumented(model) -> list[str]:
        missing = []
        for name, info in type(model).model_fields.items():
            if not info.description:
                missing.append(name)
            value = getattr(model, name)
            if hasattr(type(value), "model_fields"):
                missing += [f"{name}.{sub}" for sub in undocumented(value)]
        return missing

    assert undocumented(WorldConfig()) == []


def test_bank_names_follow_the_number_of_banks():
    assert WorldConfig().bank_names == ["bank"]
    assert WorldConfig(n_banks=3).bank_names == ["bank_1", "bank_2", "bank_3"]
