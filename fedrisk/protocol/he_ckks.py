"""CKKS backend: packed ``X^T [[r]]`` on TenSEAL's binding of Microsoft SEAL (`tenseal.sealapi`).

Parameters. Ring degree N = 8192 (4,096 slots; 16384 accepted), coefficient modulus two 60-bit data primes
plus a 60-bit special prime (180 bits <= 218: 128-bit security by the HE standard, checked by SEAL). The key
holder encrypts ``r`` (|r| <= 1) at scale 2^40 with its secret key (symmetric encryption: smaller noise, and
seeded ciphertexts serialize at half size); a partner multiplies by its features encoded at scale 2^30 and
never rescales, so results sit at scale 2^70 with 2^119 of room: masks up to 2^44 fit.

Layout ("lanes"). Row ``t`` of a ciphertext fills ``k`` consecutive slots with the same ``r[t]``
(``slot = t * k + lane``), so one ciphertext carries ``R = slots / k`` rows. The partner multiplies
ciphertext ``c`` by its features ``X[c-th row block, p*k : (p+1)*k]`` laid out the same way, adds the
products of all ciphertexts, and sums the R rows with ``log2 R`` rotations by ``k, 2k, 4k, ...``: every slot
``lane`` then holds ``sum_t X[t, p*k + lane] * r[t]``. ``ceil(d / k)`` such passes give all ``d`` feature
sums in ``ceil(d / k)`` ciphertexts. ``k = 1`` is the classic layout (``d * log2(slots)`` rotations, ``d``
result ciphertexts); larger ``k`` trades encryptions and upload for far fewer rotations and a smaller reply.
`choose_lanes` picks ``k`` from a cost model measured on this machine.

Masking. A partner adds a fresh public-key encryption of ``m``, uniform in ``[-2^44, 2^44]``, to each lane
(the same in every copy of the lane); the fresh encryption also re-randomizes the reply's noise. A real-valued mask hides a sum ``v`` statistically, not perfectly:
the key holder's view of ``v + m`` is within statistical distance ``|v| / 2^44`` of the view for ``v = 0``
(about 2^-30 for sums of a few thousand rows). The mask is capped by double precision: decoding
``v + m`` loses ``|m| * 2^-52`` per value (measured ~4e-3 in units of ``r``), which the noise flooding
below dominates anyway.

Noise flooding. A CKKS decryption carries the scheme's noise, which depends on the secret key (the
IND-CPA-D key-recovery attack of Li and Micciancio, 2021), so the key holder never returns a raw
decryption: it adds Gaussian noise of standard deviation ``sigma = sqrt(12 * tau) * 2^(s/2) * t``
(Li, Micciancio, Schultz, Sorrell 2022; OpenFHE's NOISE_FLOODING_DECRYPT uses the same formula), with
``s`` bits of statistical security against ``tau`` decryptions and ``t`` the computation's noise estimated
as OpenFHE does: the same computation on a fresh key pair and synthetic data, noise read off the imaginary
part of the decoded slots (the true values are real). This module does not write any cryptography; the
layout, masking and flooding are arithmetic on SEAL's encode/encrypt/multiply_plain/rotate/decrypt.
"""

from __future__ import annotations

import atexit
import math
import os
import secrets
import shutil
import tempfile
import uuid
from typing import Any

import numpy as np
import tenseal.sealapi as sa

from fedrisk.protocol.he_wire import WorkerPool, he_error

COEFF_BITS = (60, 60, 60)
SCALE_R_BITS = 40
SCALE_X_BITS = 30
KEY_SIZES = (8192, 16384)
#: Feature scale of the flooding calibration's synthetic data (fedrisk standardizes features; 4 is generous).
CALIBRATION_X_SCALE = 4.0

# Measured CPU costs (ms on this machine, N = 8192) for `choose_lanes`: per uploaded ciphertext (encrypt,
# serialize, load, 131 kB at 100 MB/s), per ciphertext and pass (encode + multiply_plain), per rotation,
# and per result ciphertext (mask encryption, serialize, decrypt, 262 kB at 100 MB/s).
_MS_PER_CT, _MS_MUL, _MS_ROT, _MS_PER_RESULT = 5.2, 0.55, 2.1, 9.4


# ---------------------------------------------------------------------------------------------------------
# SEAL objects to and from bytes. The binding saves only to files, so a private tmpfs directory is used.

_TMP: str | None = None


def _tmp_path() -> str:
    global _TMP
    if _TMP is None:
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        _TMP = tempfile.mkdtemp(prefix="fedrisk-he-", dir=base)
        atexit.register(shutil.rmtree, _TMP, True)
    return os.path.join(_TMP, uuid.uuid4().hex)


def _save(obj: Any) -> bytes:
    path = _tmp_path()
    try:
        obj.save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        if os.path.exists(path):
            os.remove(path)


def _load(obj: Any, context: sa.SEALContext | None, data: bytes, what: str) -> Any:
    path = _tmp_path()
    try:
        with open(path, "wb") as f:
            f.write(data)
        obj.load(path) if context is None else obj.load(context, path)
    except (RuntimeError, ValueError) as exc:
        raise he_error(f"a CKKS {what} does not fit this run's key and parameters ({exc})") from None
    finally:
        if os.path.exists(path):
            os.remove(path)
    return obj


def _context(parms: sa.EncryptionParameters) -> sa.SEALContext:
    context = sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise he_error(f"CKKS parameters refused by SEAL: {context.parameters_error_message()}")
    return context


def _parameters(key_bits: int) -> sa.EncryptionParameters:
    if key_bits not in KEY_SIZES:
        raise he_error(f"a CKKS ring degree of {key_bits} is not supported", f"use one of {list(KEY_SIZES)}")
    parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(key_bits)
    parms.set_coeff_modulus(sa.CoeffModulus.Create(key_bits, list(COEFF_BITS)))
    return parms


def choose_lanes(n_rows: int, n_features: int, slots: int) -> int:
    """Lanes per row (a power of two) minimising the modelled seconds of one ``X^T [[r]]``."""
    best, best_cost = 1, math.inf
    k = 1
    while k <= slots // 2:
        rows = slots // k
        cts, passes = -(-n_rows // rows), -(-n_features // k)
        cost = (
            cts * _MS_PER_CT + cts * passes * _MS_MUL + passes * (math.log2(rows) * _MS_ROT + _MS_PER_RESULT)
        )
        if cost < best_cost:
            best, best_cost = k, cost
        k *= 2
    return best


# ---------------------------------------------------------------------------------------------------------
# Key holder

_WORKER: dict[str, Any] = {}


def _init_worker(key_bits: int, sk_bytes: bytes) -> None:
    context = _context(_parameters(key_bits))
    secret = _load(sa.SecretKey(), context, sk_bytes, "secret key")
    _WORKER.update(encoder=sa.CKKSEncoder(context), encryptor=sa.Encryptor(context, secret))


def _encrypt_in_worker(values: np.ndarray) -> bytes:
    return _encrypt_with(_WORKER["encoder"], _WORKER["encryptor"], values)


def _encrypt_with(encoder: sa.CKKSEncoder, encryptor: sa.Encryptor, values: np.ndarray) -> bytes:
    plain = sa.Plaintext()
    encoder.encode(values.tolist(), 2.0**SCALE_R_BITS, plain)
    return _save(encryptor.encrypt_symmetric(plain))  # seeded: half the bytes of a full ciphertext


class CkksSecret:
    """The key holder's CKKS key: encrypts packed rows, decrypts masked sums with noise flooding."""

    def __init__(
        self, key_bits: int, flood_bits: int, flood_queries: int, workers: int = 1, calibrate: bool = True
    ) -> None:
        self.key_bits, self.slots = key_bits, key_bits // 2
        self.context = _context(_parameters(key_bits))
        keygen = sa.KeyGenerator(self.context)
        self._secret = keygen.secret_key()
        steps = [2**i for i in range(int(math.log2(self.slots)))]  # every rotation a layout can ask for
        galois = keygen.create_galois_keys([pow(3, s, 2 * key_bits) for s in steps])
        public_key = sa.PublicKey()
        keygen.create_public_key(public_key)  # the binding cannot return SEAL's seeded form of this one
        self._public = [_save(_parameters(key_bits)), _save(galois), _save(public_key)]
        self.encoder = sa.CKKSEncoder(self.context)
        self._encryptor = sa.Encryptor(self.context, self._secret)
        self._decryptor = sa.Decryptor(self.context, self._secret)
        self.flood_bits, self.flood_queries, self._calibrate = flood_bits, flood_queries, calibrate
        self._sigma: dict[tuple[int, int, int], float] = {}
        self._fresh: tuple[CkksSecret, CkksPublic] | None = None
        secret_bytes = _save(self._secret) if workers > 1 else b""  # only worker processes need a copy
        self._pool = WorkerPool(workers, _init_worker, (key_bits, secret_bytes))
        self._rng = np.random.default_rng(secrets.randbits(128))

    def public_blobs(self) -> list[bytes]:
        return list(self._public)

    def encrypt(self, r: np.ndarray, n_features: int, lanes: int | None = None) -> tuple[dict, list[bytes]]:
        """``r`` (|r| <= 1) in the lanes layout for a partner with ``n_features`` columns."""
        k = lanes or choose_lanes(len(r), n_features, self.slots)
        rows = self.slots // k
        cts = max(-(-len(r) // rows), 1)
        padded = np.zeros(cts * rows)
        padded[: len(r)] = r
        chunks = [np.repeat(padded[c * rows : (c + 1) * rows], k) for c in range(cts)]
        blobs = self._pool.run(
            lambda v: _encrypt_with(self.encoder, self._encryptor, v), _encrypt_in_worker, chunks
        )
        return {"n": len(r), "lanes": k, "cts": cts}, blobs

    def decrypt(self, layout: dict, blobs: list[bytes]) -> list[bytes]:
        """The masked sums, plus flooding noise (see the module docstring), as one float64 blob."""
        k, d, passes = int(layout["lanes"]), int(layout["features"]), len(blobs)
        if k < 1 or self.slots % k or passes != -(-d // k):
            raise he_error("a CKKS reply does not match the layout its request was sent with")
        values = []
        for blob in blobs:
            ct = _load_result(self.context, blob)
            plain = sa.Plaintext()
            self._decryptor.decrypt(ct, plain)
            values.append(np.asarray(self.encoder.decode_double(plain)[:k]))
        opened = np.concatenate(values)[:d]
        opened += self._rng.normal(0.0, self.flood_sigma(int(layout["cts"]), k, passes), d)
        return [opened.astype("<f8").tobytes()]

    def flood_sigma(self, cts: int, lanes: int, passes: int) -> float:
        """Flooding noise for one layout: ``sqrt(12 tau) 2^(s/2) t``, ``t`` measured on a fresh key."""
        key = (cts, lanes, passes)
        if not self._calibrate:
            return 0.0
        if key not in self._sigma:
            if self._fresh is None:  # one fresh key pair for every layout's estimate
                fresh = CkksSecret(self.key_bits, self.flood_bits, self.flood_queries, calibrate=False)
                self._fresh = fresh, CkksPublic(fresh.public_blobs(), self.key_bits)
            fresh, partner = self._fresh
            rng = np.random.default_rng(0)
            n = cts * (self.slots // lanes)
            layout, blobs = fresh.encrypt(rng.uniform(-1, 1, n), passes * lanes, lanes=lanes)
            X = rng.normal(0.0, CALIBRATION_X_SCALE, (n, passes * lanes))
            imag = []
            for ct in partner.xt(partner.load(layout, blobs), layout, X):
                plain = sa.Plaintext()
                fresh._decryptor.decrypt(ct, plain)
                imag.append(np.imag(fresh.encoder.decode_complex(plain)))
            t = float(np.std(np.concatenate(imag)))
            self._sigma[key] = math.sqrt(12 * self.flood_queries) * 2 ** (self.flood_bits / 2) * t
        return self._sigma[key]

    def close(self) -> None:
        self._pool.close()


def _load_result(context: sa.SEALContext, blob: bytes) -> sa.Ciphertext:
    ct = _load(sa.Ciphertext(), context, blob, "ciphertext")
    if ct.size() != 2 or not math.isclose(ct.scale, 2.0 ** (SCALE_R_BITS + SCALE_X_BITS), rel_tol=1e-9):
        raise he_error("a CKKS reply has the wrong shape or scale for X^T [[r]]")
    return ct


# ---------------------------------------------------------------------------------------------------------
# Partner


class CkksPublic:
    """A partner's view of the key holder's CKKS key: parameters, rotation and public keys, no secret key."""

    def __init__(self, blobs: list[bytes], key_bits: int) -> None:
        if len(blobs) != 3:
            raise he_error("a CKKS public context must hold parameters, rotation keys and a public key")
        parms = _load(sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS), None, blobs[0], "parameter set")
        degree = parms.poly_modulus_degree()
        bits = tuple(m.bit_count() for m in parms.coeff_modulus())
        if degree != key_bits or bits != COEFF_BITS:
            raise he_error(
                f"the key holder's CKKS key has ring degree {degree} and modulus {list(bits)}, expected "
                f"{key_bits} and {list(COEFF_BITS)}",
                "set the same key size for every holder",
            )
        self.key_bits, self.slots = key_bits, key_bits // 2
        self.context = _context(parms)
        self._galois = _load(sa.GaloisKeys(), self.context, blobs[1], "rotation key set")
        public_key = _load(sa.PublicKey(), self.context, blobs[2], "public key")
        self._encryptor = sa.Encryptor(self.context, public_key)
        self._evaluator = sa.Evaluator(self.context)
        self._encoder = sa.CKKSEncoder(self.context)

    def load(self, layout: dict, blobs: list[bytes]) -> list[sa.Ciphertext]:
        k, n, cts = int(layout["lanes"]), int(layout["n"]), int(layout["cts"])
        if k < 1 or self.slots % k or len(blobs) != cts or cts != max(-(-n // (self.slots // k)), 1):
            raise he_error("CKKS ciphertexts do not match the layout in their header")
        out = []
        for blob in blobs:
            ct = _load(sa.Ciphertext(), self.context, blob, "ciphertext")
            if ct.size() != 2 or not math.isclose(ct.scale, 2.0**SCALE_R_BITS, rel_tol=1e-9):
                raise he_error("a CKKS ciphertext has the wrong shape or scale for an encrypted vector")
            out.append(ct)
        return out

    def xt(self, cts: list[sa.Ciphertext], layout: dict, X: np.ndarray) -> list[sa.Ciphertext]:
        """``X^T [[r]]`` as ``ceil(d / lanes)`` ciphertexts (see the module docstring for the layout)."""
        k, rows = int(layout["lanes"]), self.slots // int(layout["lanes"])
        n, d = X.shape
        passes = -(-d // k)
        padded = np.zeros((len(cts) * rows, passes * k))
        padded[:n, :d] = X
        ev, out = self._evaluator, []
        for p in range(passes):
            acc = None
            for c, ct in enumerate(cts):
                block = padded[c * rows : (c + 1) * rows, p * k : (p + 1) * k]
                if not block.any():  # SEAL refuses a product with an all-zero plaintext; it adds nothing
                    continue
                plain = sa.Plaintext()
                self._encoder.encode(block.reshape(-1).tolist(), ct.parms_id(), 2.0**SCALE_X_BITS, plain)
                prod = sa.Ciphertext()
                ev.multiply_plain(ct, plain, prod)
                if acc is None:
                    acc = prod
                else:
                    ev.add_inplace(acc, prod)
            if acc is not None:
                for i in range(int(math.log2(rows))):
                    rotated = sa.Ciphertext()
                    ev.rotate_vector(acc, k * 2**i, self._galois, rotated)
                    ev.add_inplace(acc, rotated)
            out.append(acc)  # None: these features are zero on every row, the sums are exactly 0
        return out

    def mask(self, sums: list[sa.Ciphertext | None], lanes: int, rng: np.random.Generator, bits: int):
        """Add a fresh public-key encryption of a uniform mask to every lane; return blobs and the mask.

        Encrypting the mask (rather than adding it as a plaintext) also re-randomizes the result, so
        the reply's noise does not show the key holder how it was computed.
        """
        rows = self.slots // lanes
        masks = rng.uniform(-(2.0**bits), 2.0**bits, (len(sums), lanes))
        scale = 2.0 ** (SCALE_R_BITS + SCALE_X_BITS)
        blobs = []
        for ct, m in zip(sums, masks, strict=True):
            plain, masked = sa.Plaintext(), sa.Ciphertext()
            self._encoder.encode(np.tile(m, rows).tolist(), self.context.first_parms_id(), scale, plain)
            self._encryptor.encrypt(plain, masked)
            if ct is not None:
                self._evaluator.add_inplace(masked, ct)
            blobs.append(_save(masked))
        return blobs, masks.reshape(-1)

    @staticmethod
    def unmask(blobs: list[bytes], mask: np.ndarray, n_features: int) -> np.ndarray:
        if len(blobs) != 1 or len(blobs[0]) != 8 * n_features:
            raise he_error("a decrypted CKKS reply has the wrong length")
        return np.frombuffer(blobs[0], dtype="<f8") - mask[:n_features]
