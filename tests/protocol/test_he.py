"""The homomorphic-encryption layer: right numbers, hidden values, and loud failures on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrisk.core.errors import FedriskError
from fedrisk.protocol import he_lr
from fedrisk.protocol.he import Evaluator, HEParams, KeyHolder
from fedrisk.protocol.he_wire import FIELD, unpack

CKKS = HEParams()
PAILLIER = HEParams(scheme="paillier", key_bits=1024)  # the smallest key keeps the test fast


@pytest.fixture(scope="module")
def ckks() -> tuple[KeyHolder, Evaluator]:
    key = KeyHolder(CKKS)
    return key, Evaluator(key.public_context, CKKS)


@pytest.fixture(scope="module")
def paillier() -> tuple[KeyHolder, Evaluator]:
    key = KeyHolder(PAILLIER)
    return key, Evaluator(key.public_context, PAILLIER)


def _roundtrip(key: KeyHolder, ev: Evaluator, r: np.ndarray, X: np.ndarray, bound: float, seed: int = 0):
    masked, mask = ev.mask(ev.xt(key.encrypt(r, X.shape[1], bound), X), np.random.default_rng(seed))
    opened = key.decrypt(masked)
    return ev.unmask(opened, mask), masked, opened


def _tolerance(key: KeyHolder, masked: bytes, X: np.ndarray, bound: float) -> float:
    """Largest honest error of one sum of ``X^T r`` (|r| <= bound).

    CKKS: six standard deviations of the flooding noise, plus the scheme's own error (< 1e-2 in units of
    ``r``, from the mask's double rounding). Paillier: the fixed-point rounding of ``r`` (2^-25) and ``X``
    (2^-17), summed over the rows.
    """
    if key.params.scheme == "ckks":
        return 6 * key.flood_sigma(masked) + 1e-2 * bound
    return bound * len(X) * (2.0**-17 + np.max(np.abs(X)) * 2.0**-25)


@pytest.mark.parametrize("scheme", ["ckks", "paillier"])
def test_decrypt_of_encrypt_is_the_input(scheme, request):
    """X = identity makes X^T [[r]] = [[r]]: the values come back through encrypt, mask and decrypt."""
    key, ev = request.getfixturevalue(scheme)
    r = np.random.default_rng(1).uniform(-3, 3, 24)
    out, masked, _ = _roundtrip(key, ev, r, np.eye(24), bound=4.0)
    assert np.max(np.abs(out - r)) < _tolerance(key, masked, np.eye(24), 4.0)


@pytest.mark.parametrize("scheme", ["ckks", "paillier"])
def test_encrypted_gradient_equals_plaintext_xt_r(scheme, request):
    key, ev = request.getfixturevalue(scheme)
    rng = np.random.default_rng(2)
    n = 900 if scheme == "ckks" else 120
    # mean 1, like one-hot and positive columns: X^T g is then ~0.4, far above the CKKS noise tolerance
    # (~0.003); with mean-0 columns it was ~0.03 and the non-vacuity check below failed in 1 run of ~8
    X = rng.normal(size=(n, 7)) + 1.0
    X[:, 3] = 0.0  # an all-zero column (a one-hot level absent from the batch) must give exactly 0
    g = (rng.random(n) - (rng.random(n) < 0.1)) / n  # residual-like: (p - y) / n
    out, masked, _ = _roundtrip(key, ev, g, X, bound=1.0 / n)
    truth, tol = X.T @ g, _tolerance(key, masked, X, 1.0 / n)
    assert np.max(np.abs(out - truth)) < tol
    assert out[3] == 0.0 if scheme == "paillier" else abs(out[3]) < tol
    assert np.max(np.abs(truth)) > 10 * tol  # the check is not vacuous


@pytest.mark.parametrize("scheme", ["ckks", "paillier"])
def test_key_holder_sees_only_masked_values(scheme, request):
    key, ev = request.getfixturevalue(scheme)
    rng = np.random.default_rng(3)
    X, g = rng.normal(size=(100, 5)), rng.uniform(-1, 1, 100) / 100
    _, _, opened = _roundtrip(key, ev, g, X, bound=0.01)
    _, blobs = unpack(opened)
    truth = (X.T @ g) / 0.01  # in the units the key holder decrypts
    if scheme == "ckks":
        seen = np.frombuffer(blobs[0], dtype="<f8")
        assert np.min(np.abs(seen - truth)) > 1e6  # masks are ~2^44
    else:
        seen = [int.from_bytes(blobs[0][i : i + 128], "big") for i in range(0, len(blobs[0]), 128)]
        assert min(seen) > 2**200  # uniform modulo a 1024-bit n, not a ~2^50 fixed-point sum


@pytest.mark.parametrize("scheme", ["ckks", "paillier"])
def test_serialized_ciphertexts_are_not_the_plaintext(scheme, request):
    key, _ = request.getfixturevalue(scheme)
    r = np.round(np.random.default_rng(4).uniform(-1, 1, 64), 3)
    first, second = key.encrypt(r, 4), key.encrypt(r, 4)
    assert first != second  # randomized encryption
    for v in r[:16]:
        for raw in (
            np.float64(v).tobytes(),
            np.float32(v).tobytes(),
            int(round(v * 2**24)).to_bytes(4, "big", signed=True),
        ):
            assert raw not in first


def test_ckks_flooding_noise_is_fresh_per_decryption(ckks):
    key, ev = ckks
    X, g = np.ones((64, 2)), np.full(64, 0.5)
    masked, _ = ev.mask(ev.xt(key.encrypt(g, 2), X))
    a = np.frombuffer(unpack(key.decrypt(masked))[1][0], "<f8")
    b = np.frombuffer(unpack(key.decrypt(masked))[1][0], "<f8")
    assert key.flood_sigma(masked) > 0 and np.all(a != b)


@pytest.mark.parametrize("scheme", ["ckks", "paillier"])
def test_corrupted_message_is_refused_with_the_protection_key(scheme, request):
    key, ev = request.getfixturevalue(scheme)
    message = bytearray(key.encrypt(np.zeros(40), 3))
    message[len(message) // 2] ^= 0x40
    with pytest.raises(FedriskError) as err:
        ev.xt(bytes(message), np.ones((40, 3)))
    assert err.value.field == FIELD and "corrupted" in str(err.value)
    with pytest.raises(FedriskError):
        ev.xt(b"not a message at all", np.ones((40, 3)))


@pytest.mark.parametrize("scheme", ["ckks", "paillier"])
def test_ciphertexts_from_another_key_are_refused(scheme, request):
    key, ev = request.getfixturevalue(scheme)
    other = KeyHolder(key.params)
    with pytest.raises(FedriskError, match="another key"):
        ev.xt(other.encrypt(np.zeros(40), 3), np.ones((40, 3)))
    masked, _ = ev.mask(ev.xt(key.encrypt(np.zeros(40), 3), np.ones((40, 3))))
    with pytest.raises(FedriskError, match="another key"):
        other.decrypt(masked)


def test_wrong_key_sizes_are_refused():
    for params in (
        HEParams(key_bits=4096),
        HEParams(scheme="paillier", key_bits=512),
        HEParams(scheme="rsa"),
    ):
        with pytest.raises(FedriskError) as err:
            params.check()
        assert err.value.field == FIELD
    key = KeyHolder(PAILLIER)
    with pytest.raises(FedriskError, match="2048"):
        Evaluator(key.public_context, HEParams(scheme="paillier", key_bits=2048))
    with pytest.raises(FedriskError, match="ckks"):
        Evaluator(key.public_context, CKKS)


def test_a_reply_for_another_request_is_refused(ckks):
    key, ev = ckks
    masked_a, mask_a = ev.mask(ev.xt(key.encrypt(np.zeros(40), 3), np.ones((40, 3))))
    masked_b, _ = ev.mask(ev.xt(key.encrypt(np.zeros(40), 3), np.ones((40, 3))))
    with pytest.raises(FedriskError, match="another request"):
        ev.unmask(key.decrypt(masked_b), mask_a)


@pytest.mark.slow  # starts two worker processes (~3 s idle)
def test_parallel_encryption_gives_the_same_plaintext():
    """Encryption in two worker processes decrypts to what in-process encryption does."""
    serial, parallel = KeyHolder(CKKS), KeyHolder(HEParams(workers=2))
    rng = np.random.default_rng(5)
    n = 9000  # several ciphertexts, so both workers get some
    X, g = rng.normal(size=(n, 3)), rng.uniform(-1, 1, n)
    try:
        outs = []
        for key in (serial, parallel):
            ev = Evaluator(key.public_context, CKKS)
            out, masked, _ = _roundtrip(key, ev, g, X, bound=1.0)
            outs.append((out, _tolerance(key, masked, X, 1.0)))
    finally:
        parallel.close()
    assert np.max(np.abs(outs[0][0] - X.T @ g)) < outs[0][1]
    assert np.max(np.abs(outs[1][0] - X.T @ g)) < outs[1][1]


def test_encrypted_lr_step_matches_torch_backward(ckks):
    """The partner's gradient from the encrypted protocol is torch's gradient of its linear bottom."""
    key, ev = ckks
    rng = np.random.default_rng(6)
    n, d = 512, 6
    X = torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32))
    y = torch.from_numpy((rng.random(n) < 0.2).astype(np.float32))
    bottom = torch.nn.Linear(d, 1)
    z_p = bottom(X).squeeze(-1)
    z_p.retain_grad()
    torch.nn.functional.binary_cross_entropy_with_logits(z_p + 0.3, y).backward()
    grad_z = z_p.grad.numpy()  # what protection "none" sends the partner, per row

    request = he_lr.label_holder_request(key, grad_z, d, batch_size=n)
    masked, mask = he_lr.partner_masked_gradient(ev, request, X.numpy())
    grad_w, grad_b = he_lr.partner_gradient(ev, he_lr.key_holder_open(key, masked), mask)
    tol = _tolerance(key, masked, X.numpy(), 1.0 / n) + 1e-6  # + torch's float32 rounding
    assert np.max(np.abs(grad_w - bottom.weight.grad.numpy().ravel())) < tol
    assert abs(grad_b - float(bottom.bias.grad)) < tol
    assert he_lr.label_holder_request(key, grad_z[: 2 * (d + 1)], d, batch_size=n) is None
