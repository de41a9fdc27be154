"""Homomorphic encryption for the vertical protocol: one small API over two maintained libraries.

Two roles. The **key holder** (`KeyHolder`) generates the key pair, publishes a public context and is the
only party that can decrypt. A **partner** (`Evaluator`) loads the public context (no secret key) and
computes on ciphertexts. One encrypted aggregate ``X^T r`` takes four messages::

    key holder:  enc = key.encrypt(r, n_features, bound)        # [[r / bound]], packed
    partner:     sums = ev.xt(enc, X)                           # [[X^T r / bound]]
                 masked, mask = ev.mask(sums)                   # [[X^T r / bound + m]]
    key holder:  opened = key.decrypt(masked)                   # X^T r / bound + m (+ flooding noise)
    partner:     X^T r ~ ev.unmask(opened, mask)

The partner sees ciphertexts and its own aggregate; the key holder sees only masked values.

Schemes (``HEParams.scheme``):

- ``"ckks"`` (default; `fedrisk.protocol.he_ckks`): TenSEAL's binding of Microsoft SEAL, approximate
  arithmetic on packed vectors (4,096 values per ciphertext), ``X^T [[r]]`` with few rotations. Decryptions
  are noise-flooded before they leave the key holder.
- ``"paillier"`` (`fedrisk.protocol.he_paillier`): python-paillier with gmpy2, exact, one ciphertext per
  value; the slow reference (FATE's scheme), measured beside CKKS in ``experiments/benchmarks/he.py``.

Every message is an envelope (`fedrisk.protocol.he_wire`) naming its kind, scheme, key size and key; a
wrong key size, a ciphertext from another key or a corrupted message raises `fedrisk.core.errors.FedriskError`
naming ``federation.vertical.protection`` — never a silently wrong number. Each role counts its own costs
(`HECost`: seconds encrypting / evaluating / decrypting, bytes it sent).
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedrisk.protocol.he_wire import FIELD, expect, fingerprint, he_error, pack, unpack

Scheme = Literal["ckks", "paillier"]
KEY_SIZES: dict[str, tuple[int, ...]] = {"ckks": (8192, 16384), "paillier": (1024, 2048, 3072)}
DEFAULT_KEY_BITS = {"ckks": 8192, "paillier": 2048}

__all__ = ["FIELD", "Evaluator", "HECost", "HEParams", "KeyHolder", "Mask"]


@dataclass(frozen=True)
class HEParams:
    """How the vertical protocol encrypts; every holder of a run must use the same values.

    Parameters
    ----------
    scheme : {"ckks", "paillier"}, default="ckks"
        The homomorphic scheme (see the module docstring).
    key_bits : int or None, default=None
        CKKS ring degree (8192 or 16384) or Paillier modulus bits (1024, 2048, 3072); None picks 8192 /
        2048.
    workers : int, default=1
        Processes for the key holder's encryption (1 = in the calling process). SEAL and python-paillier
        hold the GIL, so more cores are reached through processes; worth it for large batches only.
    flood_bits : int, default=30
        CKKS: statistical security ``s`` of the noise flooding, in bits.
    flood_queries : int, default=16384
        CKKS: decryptions ``tau`` the flooding is sized for (one per result ciphertext; a run of 30 epochs
        of 50 batches with 3 result ciphertexts each makes 4,500).
    mask_bits : int, default=44
        CKKS: partners' masks are uniform in ``[-2^mask_bits, 2^mask_bits]`` (at most 46: the modulus and
        double precision leave no more room).
    """

    scheme: Scheme = "ckks"
    key_bits: int | None = None
    workers: int = 1
    flood_bits: int = 30
    flood_queries: int = 16384
    mask_bits: int = 44

    @property
    def bits(self) -> int:
        return self.key_bits or DEFAULT_KEY_BITS.get(self.scheme, 0)

    def check(self) -> None:
        """Refuse an unknown scheme, a key of the wrong size or out-of-range CKKS settings."""
        if self.scheme not in KEY_SIZES:
            raise he_error(f"unknown encryption scheme {self.scheme!r}", "use 'ckks' or 'paillier'")
        if self.bits not in KEY_SIZES[self.scheme]:
            raise he_error(
                f"a {self.scheme} key of {self.bits} bits is not supported",
                f"use one of {list(KEY_SIZES[self.scheme])}",
            )
        if not 1 <= self.workers <= 64 or not 0 <= self.flood_bits <= 128 or self.flood_queries < 1:
            raise he_error("workers, flood_bits or flood_queries out of range", "keep the defaults")
        if not 8 <= self.mask_bits <= 46:
            raise he_error(f"mask_bits={self.mask_bits} is out of range", "use 8..46 (default 44)")


@dataclass
class HECost:
    """One role's encryption costs: seconds per phase and bytes it put on the wire."""

    encrypt_seconds: float = 0.0
    evaluate_seconds: float = 0.0
    decrypt_seconds: float = 0.0
    bytes_sent: int = 0
    messages: int = 0

    def add(self, phase: str, seconds: float, sent: bytes | None = None) -> None:
        setattr(self, f"{phase}_seconds", getattr(self, f"{phase}_seconds") + seconds)
        if sent is not None:
            self.bytes_sent += len(sent)
            self.messages += 1


@dataclass(frozen=True)
class Mask:
    """What a partner keeps to unmask the key holder's reply (never sent)."""

    nonce: str
    values: Any = field(repr=False)
    n_features: int
    bound: float


@dataclass
class EncryptedSums:
    """``[[X^T r / bound]]`` as the partner holds it before masking (never sent unmasked)."""

    layout: dict
    ciphertexts: Any = field(repr=False)


def _backend(params: HEParams):
    if params.scheme == "ckks":
        from fedrisk.protocol import he_ckks

        return he_ckks.CkksSecret, he_ckks.CkksPublic
    from fedrisk.protocol import he_paillier

    return he_paillier.PaillierSecret, he_paillier.PaillierPublic


class KeyHolder:
    """The party with the secret key: encrypts per-row values, decrypts masked aggregates.

    Parameters
    ----------
    params : HEParams
        Scheme, key size and noise settings (checked here: a bad value raises `FedriskError`).
    """

    def __init__(self, params: HEParams | None = None) -> None:
        self.params = params or HEParams()
        self.params.check()
        secret_cls, _ = _backend(self.params)
        if self.params.scheme == "ckks":
            p = self.params
            self._secret = secret_cls(p.bits, p.flood_bits, p.flood_queries, p.workers)
        else:
            self._secret = secret_cls(self.params.bits, self.params.workers)
        blobs = self._secret.public_blobs()
        self.key_id = fingerprint(blobs)
        self.public_context = pack(self._header("context"), blobs)
        self.cost = HECost(bytes_sent=len(self.public_context), messages=1)

    def _header(self, kind: str, **layout: Any) -> dict[str, Any]:
        base = {
            "kind": kind,
            "scheme": self.params.scheme,
            "key_bits": self.params.bits,
            "key_id": self.key_id,
        }
        return base | layout

    def encrypt(self, values: np.ndarray, n_features: int, bound: float = 1.0) -> bytes:
        """``[[values / bound]]`` for a partner with ``n_features`` columns (``|values| <= bound``)."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        worst = np.max(np.abs(values), initial=0.0)
        # float32 gradients may overshoot a bound such as 1/B by a rounding error: tolerate and clip that
        if not np.all(np.isfinite(values)) or bound <= 0 or worst > bound * (1 + 1e-6):
            raise ValueError(f"values must be finite and within +-{bound}")
        values = np.clip(values, -bound, bound)
        start = time.perf_counter()
        layout, blobs = self._secret.encrypt(values / bound, int(n_features))
        message = pack(self._header("values", bound=float(bound), nonce=uuid.uuid4().hex, **layout), blobs)
        self.cost.add("encrypt", time.perf_counter() - start, message)
        return message

    def decrypt(self, message: bytes) -> bytes:
        """Open a partner's masked sums (CKKS: plus flooding noise); the reply goes back to that partner."""
        start = time.perf_counter()
        header, blobs = unpack(message)
        expect(header, "masked_sums", self.params.scheme, self.params.bits, self.key_id)
        opened = self._secret.decrypt(header, blobs)
        reply = pack(
            self._header("opened", nonce=header.get("nonce"), features=header.get("features")), opened
        )
        self.cost.add("decrypt", time.perf_counter() - start, reply)
        return reply

    def flood_sigma(self, message: bytes) -> float:
        """CKKS flooding noise (in units of ``X^T r``) the reply to this masked-sums message carries."""
        header, _ = unpack(message)
        if self.params.scheme != "ckks":
            return 0.0
        passes = -(-int(header["features"]) // int(header["lanes"]))
        return self._secret.flood_sigma(int(header["cts"]), int(header["lanes"]), passes) * header["bound"]

    def close(self) -> None:
        """Stop encryption worker processes, if any were started."""
        self._secret.close()


class Evaluator:
    """A partner's side: computes on the key holder's ciphertexts with the public context only.

    Parameters
    ----------
    public_context : bytes
        The key holder's `KeyHolder.public_context`.
    params : HEParams
        The run's settings; the context must match its scheme and key size.
    """

    def __init__(self, public_context: bytes, params: HEParams | None = None) -> None:
        self.params = params or HEParams()
        self.params.check()
        header, blobs = unpack(public_context)
        expect(header, "context", self.params.scheme, self.params.bits, None)
        self.key_id = fingerprint(blobs)
        if header.get("key_id") != self.key_id:
            raise he_error("a public context does not match its own fingerprint", "re-run setup")
        _, public_cls = _backend(self.params)
        self._public = public_cls(blobs, self.params.bits)
        self.cost = HECost()

    def xt(self, message: bytes, X: np.ndarray) -> EncryptedSums:
        """``[[X^T r / bound]]`` from the key holder's ``[[r / bound]]`` and this partner's rows ``X``."""
        start = time.perf_counter()
        header, blobs = unpack(message)
        expect(header, "values", self.params.scheme, self.params.bits, self.key_id)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] != int(header["n"]) or not np.all(np.isfinite(X)):
            raise ValueError(f"X must be finite with {header['n']} rows, got shape {X.shape}")
        cts = self._public.xt(self._public.load(header, blobs), header, X)
        layout = {k: header[k] for k in ("n", "lanes", "cts", "bound", "nonce") if k in header}
        self.cost.add("evaluate", time.perf_counter() - start)
        return EncryptedSums({**layout, "features": X.shape[1]}, cts)

    def mask(self, sums: EncryptedSums, rng: np.random.Generator | None = None) -> tuple[bytes, Mask]:
        """Add a fresh random mask under encryption; return the message for the key holder and the mask."""
        start = time.perf_counter()
        layout = sums.layout
        if self.params.scheme == "ckks" and rng is None:
            rng = np.random.default_rng(secrets.randbits(128))
        blobs, values = self._public.mask(
            sums.ciphertexts, int(layout.get("lanes", 1)), rng, self.params.mask_bits
        )
        header = {"kind": "masked_sums", "scheme": self.params.scheme, "key_bits": self.params.bits}
        message = pack({**header, "key_id": self.key_id, **layout}, blobs)
        self.cost.add("evaluate", time.perf_counter() - start, message)
        return message, Mask(str(layout["nonce"]), values, int(layout["features"]), float(layout["bound"]))

    def unmask(self, message: bytes, mask: Mask) -> np.ndarray:
        """``X^T r`` (float64, one value per column) from the key holder's reply and the kept mask."""
        header, blobs = unpack(message)
        expect(header, "opened", self.params.scheme, self.params.bits, self.key_id)
        if header.get("nonce") != mask.nonce or header.get("features") != mask.n_features:
            raise he_error(
                "a decrypted reply answers another request than this mask's", "report this as a bug"
            )
        return self._public.unmask(blobs, mask.values, mask.n_features) * mask.bound
