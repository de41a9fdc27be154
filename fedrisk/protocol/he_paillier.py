"""Paillier backend: exact ``X^T [[r]]`` with python-paillier (`phe`, gmpy2 arithmetic).

Paillier is additively homomorphic over the integers modulo ``n``: ``[[a]] * [[b]] = [[a + b]]`` and
``[[a]]^k = [[k * a]]`` (mod ``n^2``). Values are fixed point: the key holder encrypts
``round(r * 2^24)`` (|r| <= 1), one ciphertext per row (a row's value is multiplied by a different feature
value in every column, so nothing can be packed across rows); the partner raises each row's ciphertext to
its feature ``round(x * 2^16)`` and multiplies per column. Positive and negative exponents are accumulated
apart and joined with one modular inverse per column, instead of one inverse per negative product.

The mask is uniform modulo ``n`` and added as a fresh encryption, so the key holder's view of a masked
sum is uniform (perfect hiding) and the reply is re-randomized; decryption is exact, so no noise
flooding is needed. Key sizes: 1024 bits (FATE's default; below NIST's 112-bit floor, kept only to compare
with FATE like for like), 2048 (default) and 3072.

Encryption (one ``r^n mod n^2`` per row, the dominant cost) runs in worker processes when asked; the
homomorphic products are gmpy2 modular exponentiations through `phe.util`, which python-paillier's own
``EncryptedNumber`` arithmetic calls one product at a time.
"""

from __future__ import annotations

import random
import secrets

import numpy as np
from phe import paillier
from phe.util import invert, mulmod, powmod

from fedrisk.protocol.he_wire import WorkerPool, he_error, split

KEY_SIZES = (1024, 2048, 3072)
FRAC_R = 24
FRAC_X = 16

_WORKER: dict[str, paillier.PaillierPublicKey] = {}


def _init_worker(n: int) -> None:
    _WORKER["key"] = paillier.PaillierPublicKey(n)


def _encrypt_in_worker(values: list[int]) -> list[int]:
    return _encrypt_ints(_WORKER["key"], values)


def _encrypt_ints(key: paillier.PaillierPublicKey, values: list[int]) -> list[int]:
    return [key.raw_encrypt(v % key.n) for v in values]


def _to_blob(values: list[int], width: int) -> bytes:
    return b"".join(int(v).to_bytes(width, "big") for v in values)


def _from_blob(blob: bytes, width: int, bound: int, count: int | None, what: str) -> list[int]:
    if len(blob) % width or (count is not None and len(blob) // width != count):
        raise he_error(f"a Paillier {what} has the wrong length for this key")
    values = [int.from_bytes(blob[i : i + width], "big") for i in range(0, len(blob), width)]
    if any(not 0 < v < bound for v in values):
        raise he_error(f"a Paillier {what} is out of range for this key")
    return values


def _uniform_below(n: int, rng: np.random.Generator | None) -> int:
    if rng is None:
        return secrets.randbelow(n)
    return random.Random(int.from_bytes(rng.bytes(32), "big")).randrange(n)  # reproducible, for tests


class PaillierSecret:
    """The key holder's Paillier key pair."""

    def __init__(self, key_bits: int, workers: int = 1) -> None:
        if key_bits not in KEY_SIZES:
            raise he_error(
                f"a Paillier key of {key_bits} bits is not supported", f"use one of {list(KEY_SIZES)}"
            )
        self.key_bits = key_bits
        self.public_key, self._private_key = paillier.generate_paillier_keypair(n_length=key_bits)
        self._width = 2 * key_bits // 8
        self._pool = WorkerPool(workers, _init_worker, (self.public_key.n,))

    def public_blobs(self) -> list[bytes]:
        return [self.public_key.n.to_bytes(self.key_bits // 8, "big")]

    def encrypt(self, r: np.ndarray, n_features: int) -> tuple[dict, list[bytes]]:
        ints = [int(v) for v in np.rint(np.asarray(r, dtype=np.float64) * 2.0**FRAC_R)]
        chunks = [ints[a:b] for a, b in split(len(ints), 4 * self._pool.workers)]
        parts = self._pool.run(lambda c: _encrypt_ints(self.public_key, c), _encrypt_in_worker, chunks)
        return {"n": len(ints)}, [_to_blob([c for part in parts for c in part], self._width)]

    def decrypt(self, layout: dict, blobs: list[bytes]) -> list[bytes]:
        """The masked sums exactly (uniform modulo ``n``: nothing to flood)."""
        d = int(layout["features"])
        if len(blobs) != 1:
            raise he_error("a Paillier reply must be one blob")
        cts = _from_blob(blobs[0], self._width, self.public_key.nsquare, d, "reply")
        return [_to_blob([self._private_key.raw_decrypt(c) for c in cts], self.key_bits // 8)]

    def close(self) -> None:
        self._pool.close()


class PaillierPublic:
    """A partner's view of the key holder's Paillier key: the modulus ``n``."""

    def __init__(self, blobs: list[bytes], key_bits: int) -> None:
        if len(blobs) != 1:
            raise he_error("a Paillier public context must hold exactly the modulus")
        n = int.from_bytes(blobs[0], "big")
        if n.bit_length() != key_bits or n % 2 == 0:
            raise he_error(
                f"the key holder's Paillier modulus has {n.bit_length()} bits, expected {key_bits}",
                "set the same key size for every holder",
            )
        self.key_bits = key_bits
        self.public_key = paillier.PaillierPublicKey(n)
        self._width = 2 * key_bits // 8

    def load(self, layout: dict, blobs: list[bytes]) -> list[int]:
        if len(blobs) != 1:
            raise he_error("Paillier ciphertexts must travel as one blob")
        return _from_blob(blobs[0], self._width, self.public_key.nsquare, int(layout["n"]), "ciphertext")

    def xt(self, cts: list[int], layout: dict, X: np.ndarray) -> list[int]:
        """``[[sum_i x_ij r_i]]`` for every column ``j``: ciphertext powers, multiplied per column."""
        nsq = self.public_key.nsquare
        Xi = np.rint(np.asarray(X, dtype=np.float64) * 2.0**FRAC_X).astype(np.int64)
        out = []
        for j in range(Xi.shape[1]):
            pos, neg = 1, 1
            for c, x in zip(cts, Xi[:, j].tolist(), strict=True):
                if x > 0:
                    pos = mulmod(pos, powmod(c, x, nsq), nsq)
                elif x < 0:
                    neg = mulmod(neg, powmod(c, -x, nsq), nsq)
            out.append(pos if neg == 1 else mulmod(pos, invert(neg, nsq), nsq))
        return out

    def mask(self, sums: list[int], lanes: int, rng: np.random.Generator | None, bits: int):
        """Add a fresh encryption of a uniform mask modulo ``n`` to every sum."""
        key = self.public_key
        masks = [_uniform_below(key.n, rng) for _ in sums]
        masked = [mulmod(s, key.raw_encrypt(m), key.nsquare) for s, m in zip(sums, masks, strict=True)]
        return [_to_blob(masked, self._width)], masks

    def unmask(self, blobs: list[bytes], mask: list[int], n_features: int) -> np.ndarray:
        if len(blobs) != 1:
            raise he_error("a decrypted Paillier reply must be one blob")
        n = self.public_key.n
        opened = _from_blob(blobs[0], self.key_bits // 8, n, n_features, "decrypted reply")
        values = []
        for o, m in zip(opened, mask, strict=True):
            v = (o - m) % n
            values.append(float(v - n if v > n // 2 else v))
        return np.asarray(values) / 2.0 ** (FRAC_R + FRAC_X)
