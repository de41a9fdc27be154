"""Firm identifiers shaped like China's unified social credit code (USCC, GB 32100-2015).

Hand-written because no maintained library *generates* USCCs in bulk: python-stdnum's ``stdnum.cn.uscc``
validates one string at a time (and is not a project dependency). Layout of the 18 characters:

====  =====================================================================
1     registration authority (``9`` = market regulation, i.e. companies)
2     entity type (``1`` enterprise, ``2`` individual business, ``3`` cooperative)
3-8   administrative division code of the registering region (6 digits)
9-17  organisation code (GB 11714: 8 body characters + its own check character)
18    check character: mod-31 weighted sum over the USCC alphabet
====  =====================================================================
"""

from __future__ import annotations

import numpy as np

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 characters a USCC may use (no I, O, S, V, Z)."""

USCC_WEIGHTS = np.array([pow(3, i, 31) for i in range(17)], dtype=np.int64)
"""Weights 3**(i-1) mod 31 of positions 1..17 (GB 32100-2015, 5.2)."""

ORG_CODE_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
"""Weights of the 8 body characters of an organisation code (GB 11714-1997)."""

_VALUE_OF = np.full(128, -1, dtype=np.int64)
_VALUE_OF[np.frombuffer(ALPHABET.encode(), dtype=np.uint8)] = np.arange(31)
_ALPHABET_BYTES = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)


def uscc_check_values(first17: np.ndarray) -> np.ndarray:
    """Check-character values (0..30) for rows of 17 alphabet values (an ``(n, 17)`` int array)."""
    return (31 - (first17 @ USCC_WEIGHTS) % 31) % 31


def make_uscc(
    region_codes: np.ndarray, org_serials: np.ndarray, entity_type: np.ndarray | None = None
) -> np.ndarray:
    """Assemble USCC strings, vectorised.

    Parameters
    ----------
    region_codes : np.ndarray
        Six-digit administrative division codes (ints, e.g. 440305).
    org_serials : np.ndarray
        Distinct integers in ``[0, 10**8)``: the organisation-code body (8 digits) of each firm; distinct
        serials give distinct codes.
    entity_type : np.ndarray or None
        Type digit per firm (1 enterprise, 2 individual business, 3 cooperative); default all 1.

    Returns
    -------
    np.ndarray
        ``<U18`` array of codes with valid organisation-code and USCC check characters.
    """
    n = len(region_codes)
    entity_type = (
        np.ones(n, dtype=np.int64) if entity_type is None else np.asarray(entity_type, dtype=np.int64)
    )
    chars = np.empty((n, 18), dtype=np.uint8)
    weighted_sum = np.zeros(n, dtype=np.int64)

    def put(position: int, values: np.ndarray) -> None:  # values are alphabet indices (< 31)
        chars[:, position] = _ALPHABET_BYTES[values]
        weighted_sum[:] += USCC_WEIGHTS[position] * values

    put(0, np.full(n, 9, dtype=np.int64))
    put(1, entity_type)
    region = _digits(np.asarray(region_codes, dtype=np.int64), 6)
    for i in range(6):  # loops over character positions, each vectorised over all firms
        put(2 + i, region[:, i])
    body = _digits(np.asarray(org_serials, dtype=np.int64), 8)
    org_sum = np.zeros(n, dtype=np.int64)
    for i in range(8):
        put(8 + i, body[:, i])
        org_sum += ORG_CODE_WEIGHTS[i] * body[:, i]
    org_check = (11 - org_sum % 11) % 11  # 10 is written 'X' (= 29 in the USCC alphabet)
    put(16, np.where(org_check == 10, ALPHABET.index("X"), org_check))
    chars[:, 17] = _ALPHABET_BYTES[(31 - weighted_sum % 31) % 31]
    return chars.view("S18").ravel().astype("U18")


def is_valid_uscc(codes: np.ndarray) -> np.ndarray:
    """Boolean mask: which codes are 18 alphabet characters with a correct GB 32100 check character."""
    encoded = np.char.encode(
        np.asarray(codes, dtype=str), "utf-8"
    )  # non-ASCII bytes are never in the alphabet
    ok_length = np.char.str_len(encoded) == 18
    raw = encoded.astype("S18")  # longer codes are cut here, but already failed the length check
    chars = np.frombuffer(raw.tobytes(), dtype=np.uint8).reshape(len(raw), 18)
    values = _VALUE_OF[np.minimum(chars, 127)]
    in_alphabet = (values >= 0).all(axis=1)
    return ok_length & in_alphabet & (uscc_check_values(values[:, :17]) == values[:, 17])


def _digits(numbers: np.ndarray, width: int) -> np.ndarray:
    """Decimal digits of ``numbers`` as an ``(n, width)`` array, most significant first."""
    out = np.empty((len(numbers), width), dtype=np.int64)
    rest = numbers.copy()
    for position in range(width - 1, -1, -1):  # loop over digit positions, vectorised over firms
        rest, out[:, position] = np.divmod(rest, 10)
    return out
