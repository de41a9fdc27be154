"""One PSI per run: every seed's alignment comes from one cached intersection and equals a fresh PSI."""

from __future__ import annotations

import numpy as np
import pytest

import fedrisk.protocol.psi_cache as cache_mod
from fedrisk.protocol.psi import align_parties
from fedrisk.protocol.psi_cache import cached_alignment, plan_order


@pytest.fixture(scope="module")
def tables() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    bank = np.array([f"B{i:05d}" for i in rng.permutation(500)])
    tax = rng.permutation(np.concatenate([bank[:350], [f"T{i}" for i in range(100)]]))
    chain = rng.permutation(np.concatenate([bank[200:400], [f"C{i}" for i in range(50)]]))
    return {"bank": bank, "tax": tax, "supply_chain": chain}


def _splits(bank: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """A seed's applicants: a different subset and order of the bank's firms for every seed."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(bank))[:400]
    return {"train": bank[order[:250]], "val": bank[order[250:300]], "test": bank[order[300:]]}


def test_every_seed_reuses_one_psi_and_gets_what_a_fresh_psi_gives(tables, tmp_path, monkeypatch):
    calls = []
    real = cache_mod.align_parties
    monkeypatch.setattr(cache_mod, "align_parties", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    partners = {p: tables[p] for p in ("tax", "supply_chain")}
    for seed in (0, 1):
        applicants = plan_order(_splits(tables["bank"], seed))
        cached = cached_alignment(
            tmp_path, "bank", tables["bank"], applicants, partners, seed=seed, parallel=False
        )
        fresh = align_parties("bank", applicants, partners, seed=seed, parallel=False)
        for partner in partners:  # same ids, same seed-keyed order
            assert cached.shared_ids[partner].tolist() == fresh.shared_ids[partner].tolist()
        assert [t.server for t in cached.transcripts] == ["tax", "supply_chain"]
    assert len(calls) == 1 and set(calls[0]) == {"tax", "supply_chain"}  # one PSI per partner for both seeds


def test_a_new_partner_or_changed_table_misses_and_a_damaged_entry_is_recomputed(
    tables, tmp_path, monkeypatch
):
    calls = []
    real = cache_mod.align_parties
    monkeypatch.setattr(
        cache_mod, "align_parties", lambda *a, **k: (calls.append(sorted(a[2])), real(*a, **k))[1]
    )
    applicants = plan_order(_splits(tables["bank"], 0))

    def align(partners):
        return cached_alignment(
            tmp_path, "bank", tables["bank"], applicants, partners, seed=0, parallel=False
        )

    align({"tax": tables["tax"]})
    align({"tax": tables["tax"], "supply_chain": tables["supply_chain"]})  # only the new partner runs
    align({"tax": tables["tax"][:-1]})  # the tax table changed: its key changed
    for entry in tmp_path.glob("*.npz"):
        entry.write_bytes(b"PK\x03\x04 cut short")
    again = align({"tax": tables["tax"]})
    assert calls == [["tax"], ["supply_chain"], ["tax"], ["tax"]]
    assert set(again.shared_ids["tax"]) == set(applicants) & set(tables["tax"])
