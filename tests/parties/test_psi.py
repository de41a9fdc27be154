"""PSI alignment: exact intersections, honest errors, and the GCS overflow guard."""

from __future__ import annotations

import numpy as np
import private_set_intersection.python as psi
import pytest

import fedrisk.protocol.psi as psi_mod
from fedrisk.core.errors import FedriskError
from fedrisk.protocol.psi import (
    DEFAULT_FPR,
    GCS_HASH_RANGE_LIMIT,
    GCS_MAX_FPR,
    GCS_MEAN_GAP_LIMIT,
    Alignment,
    align_parties,
    choose_fpr,
    gcs_hash_range,
    private_intersection,
)
from fedrisk.protocol.rosters import partner_rows


def _random_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct random 12-character ids, unsorted, so order bugs would show."""
    alphabet = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"))
    ids = np.unique(["".join(row) for row in rng.choice(alphabet, size=(int(n * 1.01) + 10, 12))])
    return rng.permutation(ids)[:n].astype(object)


@pytest.fixture(scope="module")
def world() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240611)
    universe = _random_ids(rng, 2000)
    bank = universe[:1000]
    tax = rng.permutation(np.concatenate([bank[:800], universe[1000:1200]]))  # 80% of the bank
    chain = rng.permutation(np.concatenate([bank[600:920], universe[1200:1350]]))  # 32% of the bank
    return {"bank": bank, "tax": tax, "supply_chain": chain, "stranger": universe[1500:1700]}


def test_intersection_is_true_overlap_in_client_order(world):
    got, transcript = private_intersection("bank", world["bank"], "tax", world["tax"])
    tax = set(world["tax"])
    expected = np.array([i for i in world["bank"] if i in tax], dtype=object)
    assert len(expected) == 800
    np.testing.assert_array_equal(got, expected)
    assert transcript.client == "bank" and transcript.server == "tax"
    assert (transcript.n_client, transcript.n_server) == (1000, 1000)
    assert transcript.fpr == DEFAULT_FPR  # small sets keep the target
    assert transcript.seconds > 0


def test_transcript_counts_bytes_both_ways(world):
    _, t = private_intersection("bank", world["bank"], "supply_chain", world["supply_chain"])
    # The request carries one compressed P-256 point (33 bytes) per client id; the response one per id
    # too, plus the server's compressed set.
    assert t.bytes_client_to_server >= 33 * t.n_client
    assert t.bytes_server_to_client >= 33 * t.n_client + t.n_server
    assert t.bytes_client_to_server < 40 * t.n_client


def test_list_input_gives_str_array_and_same_ids(world):
    got, _ = private_intersection("bank", list(world["bank"][:300]), "tax", list(world["tax"]))
    tax = set(world["tax"])
    assert got.tolist() == [i for i in world["bank"][:300] if i in tax]


def test_parallel_and_serial_agree(world, monkeypatch):
    partners = {"tax": world["tax"], "supply_chain": world["supply_chain"]}
    serial = align_parties("bank", world["bank"], partners, parallel=False, seed=3)

    pools = []

    class CountingPool(psi_mod.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(kwargs.get("max_workers"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(psi_mod, "PARALLEL_MIN_ITEMS", 0)
    monkeypatch.setattr(psi_mod, "_n_cpus", lambda: 2)
    monkeypatch.setattr(psi_mod, "ProcessPoolExecutor", CountingPool)
    parallel = align_parties("bank", world["bank"], partners, parallel=True, seed=3)

    assert pools == [2], "the parallel path did not run"
    assert isinstance(parallel, Alignment) and parallel.label_holder == "bank"
    for name, ids in partners.items():
        np.testing.assert_array_equal(parallel.shared_ids[name], serial.shared_ids[name])
        assert set(serial.shared_ids[name]) == set(world["bank"]) & set(ids)
    assert [t.server for t in parallel.transcripts] == ["tax", "supply_chain"]
    assert parallel.coverage("tax", len(world["bank"])) == pytest.approx(0.8)
    assert parallel.coverage("supply_chain", len(world["bank"])) == pytest.approx(0.32)


def test_shared_ids_are_shuffled_by_seed(world):
    bank, partners = world["bank"][:500], {"tax": world["tax"]}
    a = align_parties("bank", bank, partners, seed=1).shared_ids["tax"]
    b = align_parties("bank", bank, partners, seed=1).shared_ids["tax"]
    c = align_parties("bank", bank, partners, seed=2).shared_ids["tax"]
    np.testing.assert_array_equal(a, b)
    assert set(a) == set(c) and not np.array_equal(a, c)
    in_bank_order = [i for i in bank if i in set(a)]
    assert a.tolist() != in_bank_order  # the bank's order (e.g. by application date) does not leak


@pytest.mark.parametrize("who", ["bank", "tax"])
def test_duplicate_ids_name_the_party(world, who):
    ids = {"bank": world["bank"], "tax": world["tax"]}
    ids[who] = np.concatenate([ids[who], ids[who][:2]])
    with pytest.raises(FedriskError, match=f"'{who}' has 2 duplicated firm ids"):
        align_parties("bank", ids["bank"], {"tax": ids["tax"]})


@pytest.mark.parametrize("who", ["bank", "tax"])
def test_empty_set_names_the_party(world, who):
    ids = {"bank": world["bank"], "tax": world["tax"]}
    ids[who] = np.array([], dtype=object)
    with pytest.raises(FedriskError, match=f"'{who}' holds no firm ids"):
        align_parties("bank", ids["bank"], {"tax": ids["tax"]})
    with pytest.raises(FedriskError, match=f"'{who}' holds no firm ids"):
        private_intersection("bank", ids["bank"], "tax", ids["tax"])


def test_non_string_ids_are_rejected():
    with pytest.raises(FedriskError, match="'tax' has a non-string firm id 7"):
        private_intersection("bank", ["a", "b"], "tax", ["a", 7])


def test_no_overlap_names_both_parties(world):
    partners = {"tax": world["tax"], "supply_chain": world["stranger"]}
    with pytest.raises(FedriskError) as err:
        align_parties("bank", world["bank"], partners, parallel=False)
    assert err.value.field == "data.parties"
    assert "no firm ids shared between 'bank' and 'supply_chain'" in str(err.value)
    relaxed = align_parties("bank", world["bank"], partners, parallel=False, require_overlap=False)
    assert len(relaxed.shared_ids["supply_chain"]) == 0
    assert relaxed.coverage("supply_chain", len(world["bank"])) == 0.0


@pytest.mark.parametrize(
    ("n_client", "n_server"),
    [(95_000, 95_000), (95_916, 95_916), (95_917, 95_917), (100_000, 100_000), (10**6, 10**6),
     (10**6, 3 * 10**6), (3 * 10**6, 10**5), (2_000_000, 2_000_000), (3_030_000, 3_030_000),
     (3_040_000, 3_040_000), (10**5, 1), (3000, 10), (10**6, 2000)],
)  # fmt: skip
def test_choose_fpr_respects_the_gcs_limits(n_client, n_server):
    fpr, structure = choose_fpr(n_client, n_server)
    if structure == "gcs":
        hash_range = gcs_hash_range(n_client, n_server, fpr)
        assert hash_range < GCS_HASH_RANGE_LIMIT < 2**63
        assert hash_range / n_server < GCS_MEAN_GAP_LIMIT
        assert DEFAULT_FPR <= fpr <= GCS_MAX_FPR
        needed = max(n_client, n_server) * n_client / min(GCS_HASH_RANGE_LIMIT, GCS_MEAN_GAP_LIMIT * n_server)
        assert fpr <= max(DEFAULT_FPR, needed * (1 + 1e-12))  # raised no more than needed
    else:  # GCS would have needed a worse fpr than GCS_MAX_FPR: the Bloom filter keeps the target
        assert structure == "bloom_filter" and fpr == DEFAULT_FPR
        gcs_fpr = max(n_client, n_server) * n_client / GCS_HASH_RANGE_LIMIT
        gap_fpr = max(n_client, n_server) * n_client / (GCS_MEAN_GAP_LIMIT * n_server)
        assert max(gcs_fpr, gap_fpr) > GCS_MAX_FPR


def test_choose_fpr_values_near_the_limits():
    assert choose_fpr(95_000, 95_000) == (DEFAULT_FPR, "gcs")
    fpr, structure = choose_fpr(100_000, 100_000)
    assert structure == "gcs" and fpr == pytest.approx(1e10 / GCS_HASH_RANGE_LIMIT)
    assert choose_fpr(10**6, 10**6)[0] == pytest.approx(1.087e-7, rel=1e-3)
    assert choose_fpr(3_030_000, 3_030_000)[1] == "gcs"  # 3.03e6**2 / 9.2e18 = 0.998e-6
    assert choose_fpr(3_040_000, 3_040_000) == (DEFAULT_FPR, "bloom_filter")
    assert choose_fpr(10**6, 1) == (DEFAULT_FPR, "bloom_filter")  # a one-firm partner: mean gap too big


def test_requested_fpr_is_kept_and_checked():
    assert choose_fpr(10**6, 10**6, 1e-6) == (1e-6, "gcs")
    assert choose_fpr(10**6, 10**6, 1e-7) == (1e-7, "bloom_filter")  # GCS would overflow
    with pytest.raises(FedriskError, match="psi.fpr"):
        choose_fpr(10, 10, 0.0)
    with pytest.raises(FedriskError, match="psi.fpr"):
        align_parties("a", ["x"], {"b": ["x"]}, fpr=1.0)


def test_chosen_fpr_really_fits_the_library():
    """The GCS range depends on the declared client size, so a big client is cheap to probe."""
    n_client, server_ids = 10**6, [f"s{i}" for i in range(2000)]
    fpr, structure = choose_fpr(n_client, len(server_ids))
    assert structure == "gcs"
    server = psi.server.CreateWithNewKey(True)
    fitted = server.CreateSetupMessage(fpr, n_client, server_ids, psi.DataStructure.GCS)
    assert 0 < fitted.gcs.hash_range < 2**63
    assert fitted.gcs.hash_range == pytest.approx(gcs_hash_range(n_client, 2000, fpr), rel=1e-9)
    overflowed = server.CreateSetupMessage(1e-7, n_client, server_ids, psi.DataStructure.GCS)
    assert overflowed.gcs.hash_range < 0  # what the guard prevents
    assert gcs_hash_range(n_client, 100, 1.2e-7) < GCS_HASH_RANGE_LIMIT  # in range, but the mean gap...
    with pytest.raises(ValueError):  # ...of 100 ids over it breaks the Golomb parameter
        server.CreateSetupMessage(1.2e-7, n_client, server_ids[:100], psi.DataStructure.GCS)
    assert choose_fpr(n_client, 100) == (DEFAULT_FPR, "bloom_filter")


@pytest.mark.parametrize(("n_partner", "fpr", "structure"), [(1, None, "gcs"), (7, 1e-12, "bloom_filter")])
def test_tiny_partner_set_still_aligns(world, n_partner, fpr, structure):
    partner = world["bank"][100 : 100 + n_partner]
    assert choose_fpr(len(world["bank"]), n_partner, fpr)[1] == structure  # both structures really run
    got, transcript = private_intersection("bank", world["bank"], "tiny", partner, fpr=fpr)
    assert sorted(got) == sorted(partner)
    assert transcript.n_server == n_partner


def test_partner_rows_marks_ids_it_lacks():
    partner = np.array(["c", "a", "d", "b"], dtype=object)
    rows = partner_rows(partner, np.array(["b", "zz", "c"], dtype=object))
    assert rows.dtype == np.int64
    assert rows.tolist() == [3, -1, 0]
    with pytest.raises(FedriskError, match="not unique"):
        partner_rows(np.array(["a", "a"]), np.array(["a"]))


def test_coverage_rejects_unknown_partner(world):
    alignment = align_parties("bank", world["bank"][:200], {"tax": world["tax"]})
    with pytest.raises(FedriskError, match="'chain' was not aligned"):
        alignment.coverage("chain", 200)
