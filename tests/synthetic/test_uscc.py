"""Firm identifiers: shaped like a unified social credit code, with a valid GB 32100 check character."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.data.synthetic.traits import PROVINCE_NAMES, PROVINCES
from fedrisk.data.synthetic.uscc import ALPHABET, is_valid_uscc, make_uscc

# published codes of real companies (the Xiaomi one is quoted in several USCC validators' docs)
REAL_CODES = ["91110108551385082Q", "91110000600037341L"]


def test_published_codes_validate_and_a_wrong_check_character_does_not():
    assert is_valid_uscc(np.array(REAL_CODES)).all()
    assert not is_valid_uscc(np.array(["91110108551385082R", "91110000600037341K"])).any()


def test_make_uscc_reproduces_a_published_code():
    """Xiaomi: region 110108, organisation code body 55138508 (its own check digit is 2)."""
    assert make_uscc(np.array([110108]), np.array([55138508]))[0] == "91110108551385082Q"


def test_malformed_codes_are_invalid():
    malformed = ["9111010855138508", "91110108551385082QQ", "9111010855138508IQ", "91110108551385082Ｑ"]
    assert not is_valid_uscc(np.array(malformed)).any()


@settings(max_examples=60, deadline=None)
@given(
    serial=st.integers(0, 10**8 - 1),
    position=st.integers(0, 17),
    replacement=st.sampled_from(ALPHABET),
)
def test_any_single_character_error_is_detected(serial, position, replacement):
    """Weights 3**i mod 31 are units mod 31, so every one-character substitution changes the checksum."""
    code = make_uscc(np.array([320582]), np.array([serial]))[0]
    mutated = code[:position] + replacement + code[position + 1 :]
    assert is_valid_uscc(np.array([mutated]))[0] == (mutated == code)


def test_world_ids_are_valid_unique_and_carry_the_province(world):
    firms = world.firms
    ids = firms["firm_id"].to_numpy(dtype=str)
    assert len(set(ids)) == len(ids)
    assert is_valid_uscc(ids).all()
    assert all(code[0] == "9" and code[1] in "13" for code in ids[:500])
    prefix = {name: f"{PROVINCES[name][0]:02d}" for name in PROVINCE_NAMES}
    province = firms["province"].astype(str).to_numpy()
    assert all(code[2:4] == prefix[p] for code, p in zip(ids[:2000], province[:2000], strict=True))
