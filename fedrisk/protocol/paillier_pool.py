"""SecureBoost's three hot loops, run in a process pool: encrypting a tree's gradients (label holder),
summing ciphertexts per bin and packing the sums (partner).

gmpy2's small operations hold the GIL, so threads would not help; a `spawn` pool is safe inside Flower's
Ray workers (no fork of a threaded process). Work crosses the process boundary as wire bytes, the same fixed
width big-endian ciphertexts the messages carry. `workers=1` runs the same functions inline. This module
imports only numpy, gmpy2 and `paillier`, so a worker starts without torch or Flower.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import gmpy2
import numpy as np

from fedrisk.protocol import paillier

PAIR_GAIN = 0.5
"""Sum two features together when their joint (bin, bin) cells are fewer than this share of the rows."""

_ENCRYPTORS: dict[int, paillier.Encryptor] = {}


def _encryptor(context: paillier.PublicContext) -> paillier.Encryptor:
    if context.n not in _ENCRYPTORS:
        _ENCRYPTORS[context.n] = paillier.Encryptor(context)
    return _ENCRYPTORS[context.n]


class CipherWorkers:
    """Runs the hot loops for one party under one public key.

    Parameters
    ----------
    context : PublicContext
        The label holder's public key.
    workers : int, default=1
        Processes; 1 = inline (tests, or one core per party in a real deployment).
    """

    def __init__(self, context: paillier.PublicContext, workers: int = 1) -> None:
        self.context = context
        self.workers = max(1, int(workers))
        self._pool = None
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_encryptor,
                initargs=(context,),
            )
            # start every worker now (interpreter, imports, encryption table), not during the first tree
            list(self._pool.map(_warm, [0.2] * self.workers))
        else:
            _encryptor(context)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _map(self, fn, tasks: list[tuple]) -> list:
        if self._pool is None or len(tasks) == 1:
            return [fn(*t) for t in tasks]
        return list(self._pool.map(fn, *zip(*tasks, strict=True)))

    def encrypt(self, plaintexts: list[int]) -> np.ndarray:
        """Wire bytes of fresh encryptions of signed integers."""
        chunks = np.array_split(np.arange(len(plaintexts)), self.workers)
        tasks = [(self.context, [plaintexts[i] for i in c.tolist()]) for c in chunks if len(c)]
        return (
            np.concatenate(self._map(_encrypt, tasks))
            if tasks
            else np.zeros((0, self.context.cipher_bytes), np.uint8)
        )

    def bin_sums(
        self, terms: np.ndarray, codes: np.ndarray, node: np.ndarray, n_slots: int, max_bins: int
    ) -> np.ndarray:
        """Wire bytes of the encrypted sums per (node slot, feature, bin < max_bins), in that order.

        `terms` are the wire ciphertexts of the rows in the requested nodes, `codes` their bin codes and
        `node` their node slot. Empty bins hold the identity 1 (an encryption of 0 without randomness; packing
        and re-randomising hide it).
        """
        n_features = codes.shape[1]
        bounds = np.linspace(0, n_features, self.workers + 1).astype(int)
        bounds[1:-1] -= bounds[1:-1] % 2  # keep feature pairs together
        ranges = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
        tasks = [(self.context, terms, codes[:, a:b], node, n_slots, max_bins) for a, b in ranges]
        parts = self._map(_bin_sums, tasks)
        width = self.context.cipher_bytes
        blocks = [p.reshape(n_slots, b - a, max_bins, width) for p, (a, b) in zip(parts, ranges, strict=True)]
        return np.concatenate(blocks, axis=1).reshape(-1, width) if blocks else np.zeros((0, width), np.uint8)

    def pack(self, sums: np.ndarray, slot_bits: int, per_cipher: int) -> np.ndarray:
        """Pack `per_cipher` consecutive sums per ciphertext and re-randomise: the partner's reply."""
        groups = -(-len(sums) // per_cipher)
        bounds = np.linspace(0, groups, self.workers + 1).astype(int) * per_cipher
        tasks = [
            (self.context, sums[a:b], slot_bits, per_cipher)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
            if b > a
        ]
        return (
            np.concatenate(self._map(_pack, tasks))
            if tasks
            else np.zeros((0, self.context.cipher_bytes), np.uint8)
        )


# -------------------------------------------------------------------------------- task functions (picklable)
def _warm(seconds: float) -> None:
    time.sleep(seconds)


def _encrypt(context: paillier.PublicContext, plaintexts: list[int]) -> np.ndarray:
    return paillier.to_bytes(_encryptor(context).encrypt(plaintexts), context.cipher_bytes)


def _pack(context: paillier.PublicContext, sums: np.ndarray, slot_bits: int, per_cipher: int) -> np.ndarray:
    packed = paillier.pack(paillier.from_bytes(sums, context), slot_bits, per_cipher, context.nsquare)
    return paillier.to_bytes(_encryptor(context).rerandomize(packed), context.cipher_bytes)


def _bin_sums(
    context: paillier.PublicContext,
    terms: np.ndarray,
    codes: np.ndarray,
    node: np.ndarray,
    n_slots: int,
    max_bins: int,
) -> np.ndarray:
    """Sums per (slot, feature, bin) for a block of features.

    Two features at a time when cheaper: rows are summed into joint (bin, bin) cells first, then each
    feature's bins are sums of cells -- rows + 2 cells multiplications instead of 2 rows.
    """
    ciphers = paillier.from_bytes(terms, context)
    n2 = context.nsquare
    n_features, b, w = codes.shape[1], max_bins, max_bins + 1
    codes = codes.astype(np.int64)
    node = node.astype(np.int64)
    out = [gmpy2.mpz(1)] * (n_slots * n_features * b)

    def place(feature: int, keys: np.ndarray, products: list) -> None:
        for key, product in zip(keys.tolist(), products, strict=True):
            s, code = divmod(key, w)
            if code < b:  # the missing bin is left out: the label holder gets it by subtraction
                out[(s * n_features + feature) * b + code] = product

    f = 0
    while f < n_features:
        if f + 1 < n_features:
            joint = (node * w + codes[:, f]) * w + codes[:, f + 1]
            if len(np.unique(joint)) < PAIR_GAIN * len(joint):
                keys, cells = paillier.group_products(ciphers, joint, n2)
                place(f, *paillier.group_products(cells, keys // (w * w) * w + keys // w % w, n2))
                place(f + 1, *paillier.group_products(cells, keys // (w * w) * w + keys % w, n2))
                f += 2
                continue
        place(f, *paillier.group_products(ciphers, node * w + codes[:, f], n2))
        f += 1
    return paillier.to_bytes(out, context.cipher_bytes)
