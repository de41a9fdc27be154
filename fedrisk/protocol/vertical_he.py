"""``protection = "he"`` in the split-learning protocol: the label holder's and a partner's sides of one step.

The step is the encrypted-residual LR step of `fedrisk.protocol.he_lr` (see its docstring and
``docs/protection.md``): the label holder sends ``[[dL/dz_p]]``, the partner answers with its masked
encrypted aggregate ``[[X_p^T g + m, sum g + m']]``, the label holder (the key holder) opens it, and the
partner unmasks it into the gradient of its linear bottom's weight and bias, which
`fedrisk.models.split.HolderBottom` applies as ``StepRequest.param_grads``. Partners never see a plaintext
gradient, residual or label.

`LabelHolderHE` and `PartnerHE` hold each side's state; a partner's mask between its reply and the opened
aggregate is kept as bytes (`PartnerHE.masked_gradient` returns it), so it can live in Flower's
``context.state`` when the engine moves the holder between processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from fedrisk.protocol import he_lr
from fedrisk.protocol.he import Evaluator, HECost, HEParams, KeyHolder, Mask
from fedrisk.protocol.he_wire import he_error, pack, unpack


def he_params(scheme: str, key_bits: int | None) -> HEParams:
    """The run's encryption settings (``federation.vertical.he_scheme`` / ``he_key_bits``)."""
    params = HEParams(scheme=scheme, key_bits=key_bits)  # type: ignore[arg-type]
    params.check()
    return params


@dataclass
class HESummary:
    """What encryption cost the label holder and its partners in one run (for ``cost`` and the report)."""

    scheme: str
    key_bits: int
    encrypt_seconds: float = 0.0
    decrypt_seconds: float = 0.0
    partner_seconds: float = 0.0
    skipped_batches: int = 0
    exchanges: int = 0

    def to_dict(self) -> dict:
        return dict(vars(self))


class LabelHolderHE:
    """The label holder as key holder: encrypts each partner's ``dL/dz``, opens masked aggregates."""

    def __init__(self, params: HEParams) -> None:
        self.key = KeyHolder(params)
        self.n_features: dict[str, int] = {}
        self.summary = HESummary(params.scheme, params.bits)

    @property
    def public_context(self) -> bytes:
        return self.key.public_context

    def request(self, partner: str, grad: np.ndarray, batch_size: int) -> bytes | None:
        """``[[dL/dz_p]]`` for ``partner``'s rows of a batch, or None when the batch is too small for it."""
        message = he_lr.label_holder_request(self.key, grad, self.n_features[partner], batch_size)
        if message is None:
            self.summary.skipped_batches += 1
        return message

    def open(self, masked: bytes, partner_seconds: float) -> bytes:
        """Decrypt a partner's masked aggregate (noise-flooded under CKKS) for it to unmask."""
        self.summary.exchanges += 1
        self.summary.partner_seconds += partner_seconds
        return he_lr.key_holder_open(self.key, masked)

    def cost(self) -> HECost:
        return self.key.cost

    def finish(self) -> HESummary:
        self.summary.encrypt_seconds = self.key.cost.encrypt_seconds
        self.summary.decrypt_seconds = self.key.cost.decrypt_seconds
        self.key.close()
        return self.summary


class PartnerHE:
    """A partner's side: ciphertexts in, its masked aggregate out, then its own parameter gradients."""

    def __init__(self, public_context: bytes, params: HEParams) -> None:
        self.evaluator = Evaluator(public_context, params)

    def masked_gradient(self, request: bytes, inputs: np.ndarray) -> tuple[bytes, bytes, float]:
        """The masked encrypted aggregate for the key holder, the mask to keep (bytes), seconds spent."""
        start = time.perf_counter()
        masked, mask = he_lr.partner_masked_gradient(self.evaluator, request, inputs)
        return masked, _mask_to_bytes(mask), time.perf_counter() - start

    def param_grads(self, opened: bytes, mask: bytes, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
        """Weight and bias gradients of a linear bottom ``(1, d)`` / ``(1,)`` from the opened aggregate."""
        grad_w, grad_b = he_lr.partner_gradient(self.evaluator, opened, _mask_from_bytes(mask))
        if len(shapes) != 2 or shapes[0] != (1, len(grad_w)) or shapes[1] != (1,):
            raise he_error(
                f"'he' needs a linear bottom with parameters (1, {len(grad_w)}) and (1,); got {shapes}"
            )
        return [grad_w.reshape(1, -1).astype(np.float32), np.array([grad_b], dtype=np.float32)]


def _mask_to_bytes(mask: Mask) -> bytes:
    values = mask.values
    if isinstance(values, np.ndarray):
        blob, ints = np.asarray(values, dtype="<f8").tobytes(), False
    else:  # Paillier: integers modulo n
        width = max((int(v).bit_length() + 7) // 8 for v in values) or 1
        blob, ints = b"".join(int(v).to_bytes(width, "big") for v in values), True
    header = {"kind": "mask", "nonce": mask.nonce, "n_features": mask.n_features, "bound": mask.bound}
    return pack({**header, "ints": ints, "count": len(values)}, [blob])


def _mask_from_bytes(data: bytes) -> Mask:
    header, (blob,) = unpack(data)
    count = int(header["count"])
    if header.get("ints"):
        width = len(blob) // max(count, 1)
        values = [int.from_bytes(blob[i * width : (i + 1) * width], "big") for i in range(count)]
    else:
        values = np.frombuffer(blob, dtype="<f8").copy()
    return Mask(str(header["nonce"]), values, int(header["n_features"]), float(header["bound"]))
