"""The envelope every homomorphic-encryption message travels in, and the helpers both backends share.

An envelope is ``MAGIC | header length | header (JSON) | blob count | (length, blob)... | digest``, where the
digest is a 16-byte BLAKE2b of everything before it. The header names the message kind, the scheme, the key
size and the key's fingerprint (a hash of the public context), so a receiver refuses, with one clear line,
a corrupted message, a message of another kind, or ciphertexts made under another key or another key size —
instead of computing a plausible wrong gradient from them. The digest detects accidental corruption; it is
not a MAC (integrity against an active attacker is the transport's job: TLS in the deployment engine).

Nothing here is cryptography fedrisk wrote: the length-prefixed framing and the checksum are plumbing; the
encryption lives in TenSEAL/SEAL and python-paillier (`he_ckks`, `he_paillier`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from fedrisk.core.errors import FedriskError

FIELD = "federation.vertical.protection"
MAGIC = b"FRHE\x01"
_DIGEST = 16


def he_error(problem: str, fix: str | None = None) -> FedriskError:
    """The one error a bad key, ciphertext or message raises (names the protection key)."""
    return FedriskError(FIELD, problem, fix)


def fingerprint(blobs: Sequence[bytes]) -> str:
    """A key's identity: the hash of its public context (what every ciphertext header must name)."""
    h = hashlib.blake2b(digest_size=16)
    for blob in blobs:
        h.update(struct.pack("<Q", len(blob)))
        h.update(blob)
    return h.hexdigest()


def pack(header: dict[str, Any], blobs: Sequence[bytes]) -> bytes:
    """One envelope: the JSON header (kind, scheme, key size, key id, layout) and the opaque blobs."""
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    parts = [MAGIC, struct.pack("<I", len(head)), head, struct.pack("<I", len(blobs))]
    for blob in blobs:
        parts += [struct.pack("<Q", len(blob)), bytes(blob)]
    body = b"".join(parts)
    return body + hashlib.blake2b(body, digest_size=_DIGEST).digest()


def unpack(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Header and blobs of an envelope, or the error saying why it cannot be trusted."""
    data = bytes(data)
    if len(data) < len(MAGIC) + 8 + _DIGEST or not data.startswith(MAGIC):
        raise he_error(
            "received a message that is not a fedrisk homomorphic-encryption message (wrong header)",
            "check that every holder runs the same fedrisk version and protection",
        )
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.blake2b(body, digest_size=_DIGEST).digest() != digest:
        raise he_error(
            "an encrypted message was corrupted in transit (checksum mismatch)",
            "re-run; if it repeats, check the network path between the holders",
        )
    try:
        offset = len(MAGIC)
        (head_len,) = struct.unpack_from("<I", body, offset)
        offset += 4
        header = json.loads(body[offset : offset + head_len])
        offset += head_len
        (count,) = struct.unpack_from("<I", body, offset)
        offset += 4
        blobs = []
        for _ in range(count):
            (size,) = struct.unpack_from("<Q", body, offset)
            offset += 8
            blobs.append(body[offset : offset + size])
            offset += size
    except (struct.error, ValueError) as exc:  # a valid digest over a malformed body: a sender bug
        raise he_error(f"an encrypted message is malformed ({exc})", "report this as a fedrisk bug") from None
    if offset != len(body) or not isinstance(header, dict):
        raise he_error("an encrypted message is malformed (trailing bytes)", "report this as a fedrisk bug")
    return header, blobs


def expect(header: dict[str, Any], kind: str, scheme: str, key_bits: int, key_id: str | None) -> None:
    """Refuse a message of another kind, scheme, key size or key than the receiver's."""
    if header.get("kind") != kind:
        raise he_error(
            f"expected a {kind!r} message, got {header.get('kind')!r}", "report this as a fedrisk bug"
        )
    if header.get("scheme") != scheme:
        raise he_error(
            f"received a {header.get('scheme')!r} message but this holder uses {scheme!r}",
            "set the same protection and scheme for every holder",
        )
    if header.get("key_bits") != key_bits:
        raise he_error(
            f"received a key or ciphertext of {header.get('key_bits')} bits, expected {key_bits}",
            "set the same key size for every holder",
        )
    if key_id is not None and header.get("key_id") != key_id:
        raise he_error(
            "received ciphertexts made under another key than this run's",
            "re-run setup so every holder uses the key holder's current public context",
        )


# ---------------------------------------------------------------------------------------------------------
# Parallel encryption: the libraries' encryption calls hold the GIL, so cores are used through processes.


class WorkerPool:
    """A lazily started process pool whose workers hold one key (set by ``initializer(*initargs)``).

    With ``workers <= 1`` nothing is started and ``run`` calls the in-process function. Processes are
    spawned, not forked: the caller may be a Flower or Ray worker with threads, where forking is unsafe.
    """

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple) -> None:
        self.workers = max(int(workers), 1)
        self._initializer, self._initargs = initializer, initargs
        self._pool: ProcessPoolExecutor | None = None

    def run(
        self, local: Callable[[Any], Any], remote: Callable[[Any], Any], chunks: Sequence[Any]
    ) -> list[Any]:
        """``local`` over ``chunks`` in this process, or the module-level ``remote`` across the workers."""
        if self.workers <= 1 or len(chunks) <= 1:
            return [local(c) for c in chunks]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=get_context("spawn"),
                initializer=self._initializer,
                initargs=self._initargs,
            )
        return list(self._pool.map(remote, chunks))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, stop)`` ranges covering ``range(n)`` (none empty)."""
    parts = max(1, min(parts, n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
