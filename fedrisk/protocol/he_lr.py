"""The encrypted-residual step of vertical logistic regression, one function per role.

FATE's CoordinatedLR has three roles: guest (labels), host (features) and an arbiter that holds the key.
fedrisk has no arbiter: **the label holder is the key holder**. It already knows every residual, so the key
adds no new knowledge to it, and no fourth party has to be trusted or run; partners only ever hold
ciphertexts and their own (masked, then unmasked) aggregate gradient. The key-holder functions below are
separate all the same, so an arbiter could take them over.

Vertical LR splits the log-odds: ``z = z_bank + sum_p z_p`` with ``z_p = X_p w_p + b_p`` computed by
partner ``p`` on its own rows. For the mean logistic loss over a batch of ``B`` applicants,
``dL/dz_p = (sigmoid(z) - y) / B`` per row, and the partner's gradient is ``X_p^T dL/dz_p`` (weights) and
``sum(dL/dz_p)`` (bias). Under ``protection = "none"`` the label holder sends ``dL/dz_p`` per row in the
clear. Under ``"he"`` one step with one partner is::

    label holder (key holder)        partner p
    [[g]] = Enc(dL/dz_p / bound)  ─►
                                     [[s]] = [X_p | 1]^T [[g]]            (ciphertext x own plaintext)
                                  ◄─ [[s + m]]                            (m: fresh random mask)
    s + m (+ flooding noise)      ─►
                                     s = (s + m) - m; grad = s * bound; optimiser step

which is the plaintext step up to CKKS noise (exact with Paillier), so the model and its KS match.
``bound = 1 / B`` is public (|sigmoid - y| < 1). See ``docs/protection.md`` for who learns what.

A batch where a partner covers no more than ``2 * (features + 1)`` rows is skipped for that partner
(`label_holder_request` returns None): its aggregate gradient would be ``features + 1`` equations in
barely more unknowns, close to revealing the residuals themselves.
"""

from __future__ import annotations

import numpy as np

from fedrisk.protocol.he import Evaluator, KeyHolder, Mask


def min_rows(n_features: int) -> int:
    """Fewest rows of a batch a partner with ``n_features`` columns may receive an encrypted gradient for."""
    return 2 * (n_features + 1) + 1


def label_holder_request(
    key: KeyHolder, grad_z: np.ndarray, n_features: int, batch_size: int
) -> bytes | None:
    """``[[dL/dz_p]]`` for the partner's rows of one batch, or None when the batch is too small for it.

    ``grad_z`` is the loss gradient with respect to the partner's partial log-odds (one value per row the
    partner covers in this batch, mean loss over ``batch_size`` applicants).
    """
    grad_z = np.asarray(grad_z, dtype=np.float64).reshape(-1)
    if len(grad_z) < min_rows(n_features):
        return None
    return key.encrypt(grad_z, n_features + 1, bound=1.0 / batch_size)


def partner_masked_gradient(
    ev: Evaluator, request: bytes, X_rows: np.ndarray, rng: np.random.Generator | None = None
) -> tuple[bytes, Mask]:
    """``[[ [X_p | 1]^T g + m ]]`` for the key holder, and the mask ``m`` the partner keeps."""
    X_rows = np.asarray(X_rows, dtype=np.float64)
    with_bias = np.hstack([X_rows, np.ones((len(X_rows), 1))])
    return ev.mask(ev.xt(request, with_bias), rng)


def key_holder_open(key: KeyHolder, masked: bytes) -> bytes:
    """Decrypt a partner's masked gradient (noise-flooded under CKKS) for that partner to unmask."""
    return key.decrypt(masked)


def partner_gradient(ev: Evaluator, opened: bytes, mask: Mask) -> tuple[np.ndarray, float]:
    """The partner's weight gradient ``X_p^T g`` and bias gradient ``sum(g)``, in the clear, to itself."""
    values = ev.unmask(opened, mask)
    return values[:-1], float(values[-1])


def plaintext_gradient(X_rows: np.ndarray, grad_z: np.ndarray) -> tuple[np.ndarray, float]:
    """What protection "none" computes from the per-row gradient: the reference the encrypted step matches."""
    grad_z = np.asarray(grad_z, dtype=np.float64).reshape(-1)
    return np.asarray(X_rows, dtype=np.float64).T @ grad_z, float(grad_z.sum())
