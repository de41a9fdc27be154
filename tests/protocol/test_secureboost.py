"""SecureBoost: vertical trees equal pooled trees (encrypted and clear), packed Paillier, what crosses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.core.errors import FedriskError
from fedrisk.models.gbdt import Binner, GBDTParams, boost, fit_pooled
from fedrisk.protocol import paillier
from fedrisk.protocol.secureboost import Cost, InProcessLink, SecureBoostPartner, VerticalSession


@pytest.fixture(scope="module")
def key() -> paillier.KeyPair:
    return paillier.KeyPair(1024)


def test_packed_paillier_sums_and_unpacks_signed_values_exactly(key):
    rng = np.random.default_rng(0)
    values = [int(v) for v in rng.integers(-(2**40), 2**40, size=60)]
    ciphers = key_encryptor(key).encrypt(values)
    groups = rng.integers(0, 7, size=60)
    keys, sums = paillier.group_products(ciphers, groups, key.context.nsquare)
    packed = paillier.pack(sums, slot_bits=60, per_cipher=5, nsquare=key.context.nsquare)
    assert len(packed) == 2  # 7 sums, 5 per ciphertext
    decoded = paillier.unpack(key.decrypt(packed), slot_bits=60, per_cipher=5, count=len(sums))
    expected = [sum(v for v, g in zip(values, groups, strict=True) if g == k) for k in keys.tolist()]
    assert decoded == expected
    assert any(v < 0 for v in expected)  # negative sums decode without an offset


def key_encryptor(key: paillier.KeyPair) -> paillier.Encryptor:
    return paillier.Encryptor(key.context)


def test_ciphertexts_are_randomised_and_hide_the_plaintext(key):
    enc = key_encryptor(key)
    a, b = enc.encrypt([12345, 12345])
    assert a != b and key.decrypt([a, b]) == [12345, 12345]
    assert enc.rerandomize([a])[0] != a and key.decrypt(enc.rerandomize([a])) == [12345]
    wire = paillier.to_bytes([a], key.context.cipher_bytes)
    assert (12345).to_bytes(2, "big") not in wire.tobytes()[-8:]  # not the encoded value in the clear


def test_corrupted_or_foreign_ciphertexts_are_refused(key):
    wire = paillier.to_bytes(key_encryptor(key).encrypt([1, 2]), key.context.cipher_bytes)
    corrupted = wire.copy()
    corrupted[0, :] = 0xFF  # >= n^2
    with pytest.raises(FedriskError) as caught:
        paillier.from_bytes(corrupted, key.context)
    assert caught.value.field == "federation.vertical.protection"
    with pytest.raises(FedriskError):
        paillier.from_bytes(wire[:, 1:], key.context)  # wrong width: another key size
    with pytest.raises(FedriskError):
        paillier.KeyPair(512)


def vertical_world(n: int, seed: int = 0):
    """A label holder with 2 columns and two partners with 2 columns each (one with missing values)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    x[rng.random(n) < 0.2, 4] = np.nan
    logit = -1.5 + x[:, 0] + np.nan_to_num(x[:, 4], nan=1.5) - 0.8 * x[:, 2] * (x[:, 5] > 0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    frame = pd.DataFrame(x, columns=list("abcdef"))
    return [frame[list(c)] for c in ("ab", "cd", "ef")], y


@pytest.mark.parametrize("protection", ["none", "he"])
def test_vertical_trees_equal_pooled_trees(protection):
    blocks, y = vertical_world(700 if protection == "none" else 360)
    n = len(y)
    train, valid = np.arange(n) < int(0.75 * n), np.arange(n) >= int(0.75 * n)
    params = GBDTParams(
        n_trees=6 if protection == "none" else 3, max_depth=3, max_bins=16, early_stopping_rounds=2
    )
    binners = [
        Binner(16, name).fit(b[train]) for b, name in zip(blocks, ("bank", "tax", "chain"), strict=True)
    ]
    codes = [bn.transform(b) for bn, b in zip(binners, blocks, strict=True)]

    pooled_codes = np.hstack(codes)
    pooled = fit_pooled(
        pooled_codes[train],
        y[train],
        np.concatenate([bn.n_bins for bn in binners]),
        params,
        valid=(pooled_codes[valid], y[valid]),
    )
    cost = Cost()
    partners = []
    for c, bn in zip(codes[1:], binners[1:], strict=True):
        partner = SecureBoostPartner(c[train], bn.n_bins, 16)
        partner.add_rows("val", c[valid])
        partners.append(partner)
    session = VerticalSession(
        codes[0][train],
        y[train],
        binners[0].n_bins,
        params,
        [InProcessLink(p, cost) for p in partners],
        protection=protection,
        valid=(codes[0][valid], y[valid]),
        cost=cost,
    )
    result = boost(session, params)

    assert len(result.trees) == len(pooled.trees)
    assert any(t.feature[t.internal].max() >= 2 for t in result.trees)  # partners' features are used
    for federated, twin in zip(result.trees, pooled.trees, strict=True):
        for name in ("left", "feature", "bin", "default_left", "value"):
            np.testing.assert_array_equal(getattr(federated, name), getattr(twin, name))
    scores = session.predict_margin(result.trees, codes[0][valid], "val")  # federated inference
    np.testing.assert_array_equal(scores, pooled.predict_margin(pooled_codes[valid]))
    if protection == "he":
        trees = session.tree_id + 1
        assert cost.bytes_to_partners >= 2 * trees * train.sum() * session.key.context.cipher_bytes
        assert cost.seconds["encrypt"] > 0 and cost.seconds["decrypt"] > 0


class RecordingLink(InProcessLink):
    """Keeps every message and reply, to check what crosses the boundary."""

    def __init__(self, partner, cost):
        super().__init__(partner, cost)
        self.sent, self.received = [], []

    def _call(self, name, msg):
        reply = super()._call(name, msg)
        self.sent.append(msg)
        if reply is not None:
            self.received.append(reply)
        return reply


def test_under_he_only_ciphertexts_bins_and_bits_cross():
    blocks, y = vertical_world(240, seed=1)
    params = GBDTParams(n_trees=2, max_depth=2, max_bins=8, early_stopping_rounds=0)
    binners = [Binner(8).fit(b) for b in blocks]
    codes = [bn.transform(b) for bn, b in zip(binners, blocks, strict=True)]
    partner = SecureBoostPartner(codes[1], binners[1].n_bins, 8)
    link = RecordingLink(partner, Cost())
    session = VerticalSession(codes[0], y, binners[0].n_bins, params, [link], protection="he")
    boost(session, params)

    gradients = [m for m in link.sent if type(m).__name__ == "Gradients"]
    assert gradients and all(
        m.grad is None and m.hess is None and m.ciphertexts.dtype == np.uint8 for m in gradients
    )
    # partner -> label holder: bin counts, packed ciphertexts, routing bits; no float (threshold, value) ever
    kinds = {type(r).__name__ for r in link.received}
    assert kinds == {"SetupReply", "HistogramReply", "SplitReply"} or kinds == {
        "SetupReply",
        "HistogramReply",
    }
    for reply in link.received:
        arrays = [v for v in vars(reply).values() if isinstance(v, np.ndarray)]
        assert arrays and all(a.dtype in (np.uint8, np.int32) for a in arrays)


def test_unknown_protection_names_the_key():
    blocks, y = vertical_world(50)
    codes = Binner(8).fit(blocks[0]).transform(blocks[0])
    with pytest.raises(FedriskError) as caught:
        VerticalSession(codes, y, np.array([8, 8]), GBDTParams(), [], protection="secure_agg")
    assert caught.value.field == "federation.vertical.protection"


@pytest.mark.slow
def test_worker_processes_compute_the_same_sums_as_inline(key):
    from fedrisk.protocol.paillier_pool import CipherWorkers

    rng = np.random.default_rng(2)
    inline, pool = CipherWorkers(key.context, 1), CipherWorkers(key.context, 2)
    try:
        wire = pool.encrypt([int(v) for v in rng.integers(-1000, 1000, 200)])
        codes, node = rng.integers(0, 9, (200, 5)), rng.integers(0, 2, 200)
        a, b = inline.bin_sums(wire, codes, node, 2, 8), pool.bin_sums(wire, codes, node, 2, 8)
        assert key.decrypt(paillier.from_bytes(a, key.context)) == key.decrypt(
            paillier.from_bytes(b, key.context)
        )
        packed = pool.pack(b, slot_bits=40, per_cipher=7)
        values = paillier.unpack(key.decrypt(paillier.from_bytes(packed, key.context)), 40, 7, len(b))
        assert values == key.decrypt(paillier.from_bytes(a, key.context))
    finally:
        pool.close()
