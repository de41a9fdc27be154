"""Vertical federation: the federated split model equals its pooled twin, beats the bank alone, and sends
nothing but ids it may send, embeddings and gradients.

Worlds are small (4k firms: PSI on 30k firms costs tens of seconds on a shared 2-core machine) except
the uplift test, which needs a default-size test set for a confidence interval to mean anything.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

import fedrisk  # noqa: F401 - sets Flower's environment before flwr is imported
from fedrisk.config.model import ModelConfig, TrainConfig
from fedrisk.config.vertical import VerticalConfig
from fedrisk.core.errors import FedriskError
from fedrisk.core.metrics import ks_statistic
from fedrisk.data.splits import split_applicants
from fedrisk.data.synthetic import WorldConfig, generate_world
from fedrisk.data.table import PartyTable
from fedrisk.evaluation.uncertainty import bootstrap_ks_auc
from fedrisk.federation.grids import RecordingGrid
from fedrisk.federation.vertical import run_vertical, train_centralized_twin
from fedrisk.federation.vertical_client import from_array
from fedrisk.methods.baselines import siloed_vertical
from fedrisk.models.split import make_bottom
from fedrisk.models.split_holder import HolderBottom, StepRequest
from fedrisk.protocol.psi import Alignment

LABEL_HOLDER = "bank"


@dataclass
class Wire:
    """Every message the label holder's coordinator sent or received, with its arrays' values."""

    messages: list[tuple[str, str, str, dict[str, np.ndarray]]]  # sender, receiver, type, arrays


@pytest.fixture
def tap(monkeypatch: pytest.MonkeyPatch) -> Wire:
    """Record payloads on the recorded channel itself (RecordingGrid), both directions."""
    wire = Wire([])
    original = RecordingGrid.send_and_receive

    def arrays_of(message) -> dict[str, np.ndarray]:
        if not message.has_content():
            return {}
        return {
            f"{name}/{key}": from_array(arr)
            for name, rec in message.content.array_records.items()
            for key, arr in rec.items()
        }

    def recording(self, messages, *, timeout=None):
        messages = list(messages)
        replies = list(original(self, messages, timeout=timeout))
        for m in messages:
            wire.messages.append(
                (
                    self.server_name,
                    self.name_of(m.metadata.dst_node_id),
                    m.metadata.message_type,
                    arrays_of(m),
                )
            )
        for r in replies:
            wire.messages.append(
                (
                    self.name_of(r.metadata.src_node_id),
                    self.server_name,
                    r.metadata.message_type,
                    arrays_of(r),
                )
            )
        return replies

    monkeypatch.setattr(RecordingGrid, "send_and_receive", recording)
    return wire


@pytest.fixture(scope="module")
def small_world():
    world = generate_world(WorldConfig(n_firms=4000), seed=3)
    splits = split_applicants(world.parties[LABEL_HOLDER], 0.3, 0.15, seed=3)
    return world.parties, splits


FAST = TrainConfig(epochs=12, batch_size=512, lr=0.02, patience=4)


def _ks(scored) -> float:
    return ks_statistic(scored.y, scored.p)


# ---------------------------------------------------------------------------------------------------------
# Federated == pooled twin


def test_vertical_lr_matches_its_pooled_twin_and_sends_only_embeddings(small_world, tap, tmp_path):
    parties, splits = small_world
    vcfg = VerticalConfig(psi_parallel=False)
    fed = run_vertical(parties, LABEL_HOLDER, splits, "logistic", FAST, vcfg, "inprocess", tmp_path, seed=3)
    twin = train_centralized_twin(parties, LABEL_HOLDER, splits, "logistic", FAST, vcfg, seed=3)

    for split in ("test", *(["oot"] if "oot" in splits else [])):
        f, t = fed.scores[split], twin.scores[split]
        assert np.array_equal(f.ids, t.ids) and np.array_equal(f.y, t.y)
        assert abs(_ks(f) - _ks(t)) <= 0.01
        np.testing.assert_allclose(f.p, t.p, atol=1e-5)  # same init and batch order: the same model
    assert fed.best_epoch == twin.best_epoch
    assert [round(r["val_loss"], 6) for r in fed.history] == [round(r["val_loss"], 6) for r in twin.history]

    # history and cost are reported; bytes grow epoch by epoch
    assert fed.bytes_sent > 0 and fed.psi_bytes > 0 and fed.psi_seconds > 0
    cumulative = [r["bytes_sent"] for r in fed.history]
    assert (
        cumulative == sorted(cumulative) and fed.psi_bytes < cumulative[0] < cumulative[-1] <= fed.bytes_sent
    )
    assert {"psi.request", "psi.response"} <= set(fed.messages["by_kind"])
    assert fed.round_trips <= (len(splits["train"]) // 512 + 1) * FAST.epochs + 3

    _assert_no_raw_data_on_the_wire(tap, parties, splits, max_width=1)


def test_split_nn_matches_its_pooled_twin(small_world, tmp_path):
    parties, splits = small_world
    vcfg = VerticalConfig(psi_parallel=False, embedding_dim=3, bottom_hidden=[8], top_hidden=[8])
    fed = run_vertical(
        parties, LABEL_HOLDER, splits, "mlp", FAST, vcfg, "inprocess", tmp_path, 5, _aligned(parties, splits)
    )
    twin = train_centralized_twin(parties, LABEL_HOLDER, splits, "mlp", FAST, vcfg, seed=5)
    assert abs(_ks(fed.scores["test"]) - _ks(twin.scores["test"])) <= 0.02
    np.testing.assert_allclose(fed.scores["test"].p, twin.scores["test"].p, atol=1e-4)


def test_full_batch_mode_matches_the_twin(small_world, tmp_path):
    parties, splits = small_world
    cfg = TrainConfig(epochs=15, lr=0.1, patience=0)
    vcfg = VerticalConfig(psi_parallel=False, full_batch=True)
    fed = run_vertical(
        parties,
        LABEL_HOLDER,
        splits,
        "logistic",
        cfg,
        vcfg,
        "inprocess",
        tmp_path,
        1,
        _aligned(parties, splits),
    )
    twin = train_centralized_twin(parties, LABEL_HOLDER, splits, "logistic", cfg, vcfg, seed=1)
    np.testing.assert_allclose(fed.scores["test"].p, twin.scores["test"].p, atol=1e-5)
    assert len(fed.history) == 15
    # one round trip per epoch (validation rides along), plus setup, the last validation and scoring
    assert fed.round_trips == 15 + 3


# ---------------------------------------------------------------------------------------------------------
# What crosses the wire


def _assert_no_raw_data_on_the_wire(
    wire: Wire, parties: Mapping[str, PartyTable], splits, max_width: int
) -> None:
    """Fail on any raw feature block, raw column, label vector or id a partner does not hold."""
    raw_shapes = {(t.n_rows, t.features.shape[1]) for t in parties.values()}
    applicants = np.concatenate(list(splits.values()))
    bank = parties[LABEL_HOLDER]
    label_of = pd.Series(bank.label, index=bank.ids)
    forbidden = [
        ("bank labels", bank.label.astype(float)),
        ("applicant labels", label_of[applicants].to_numpy(float)),
    ]
    for t in parties.values():
        for c in t.numeric_columns():
            forbidden.append((f"{t.name}.{c}", t.features[c].to_numpy(float)))
    partner_ids = {name: set(t.ids) for name, t in parties.items()}

    assert wire.messages, "the tap saw no traffic"
    for sender, receiver, kind, arrays in wire.messages:
        for key, value in arrays.items():
            where = f"{sender}->{receiver} {kind} {key} {value.shape}"
            if value.dtype.kind in "US":  # ids: only the setup roster, only ids the partner already holds
                assert kind == "query.vertical_setup" and sender == "server", where
                assert set(value.tolist()) <= partner_ids[receiver], f"{where}: ids the partner does not hold"
                continue
            assert value.shape[:2] not in raw_shapes, f"{where}: shaped like a holder's raw table"
            if value.ndim == 2 and value.dtype.kind == "f":
                assert value.shape[1] <= max_width, f"{where}: wider than an embedding"
            flat = value.reshape(-1).astype(float)
            if value.dtype.kind == "f" and len(flat) > 20:
                assert not np.isin(flat, (0.0, 1.0)).all(), f"{where}: 0/1 values, label-like"
            for name, column in forbidden:
                if len(column) == len(flat):
                    assert not np.allclose(flat, column, equal_nan=True), f"{where}: equals {name}"


def test_the_leak_check_catches_labels_features_and_foreign_ids(small_world):
    parties, splits = small_world
    bank, tax = parties["bank"], parties["tax"]
    leaks = [
        ("server", "tax", "train.vertical_step", {"arrays/grad": bank.label.astype(np.float32)}),
        (
            "tax",
            "server",
            "train.vertical_step",
            {"arrays/embedding": tax.features.select_dtypes("number").to_numpy()},
        ),
        (
            "tax",
            "server",
            "train.vertical_step",
            {"arrays/embedding": tax.features[tax.numeric_columns()[0]].to_numpy()},
        ),
        ("server", "tax", "query.vertical_setup", {"arrays/ids": bank.ids.astype(str)}),
    ]
    for leak in leaks:
        with pytest.raises(AssertionError):
            _assert_no_raw_data_on_the_wire(Wire([leak]), parties, splits, max_width=1)


def test_psi_finds_exactly_the_true_overlap(small_world, tap, tmp_path):
    parties, splits = small_world
    cfg = TrainConfig(epochs=1, batch_size=4096)
    fed = run_vertical(
        parties, LABEL_HOLDER, splits, "logistic", cfg, VerticalConfig(), "inprocess", tmp_path, seed=0
    )
    applicants = np.concatenate(list(splits.values()))
    rosters = {
        r: set(a["arrays/ids"].tolist())
        for s, r, k, a in tap.messages
        if k == "query.vertical_setup" and s == "server"
    }
    for partner in ("tax", "supply_chain"):
        truth = set(applicants) & set(parties[partner].ids)
        assert rosters[partner] == truth
        for split, masks in fed.coverage.items():
            expected = np.isin(fed.scores[split].ids, parties[partner].ids)
            assert np.array_equal(masks[partner], expected)
            assert np.array_equal(fed.scores[split].segments[f"covered_by_{partner}"], expected)
        assert 0 < fed.coverage["test"][partner].mean() < 1  # both groups exist, so both KS are reportable


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_no_overlap_names_both_parties(small_world, tmp_path):
    parties, splits = small_world
    tax = parties["tax"]
    stranger = PartyTable("tax", np.array([f"X{i}" for i in range(tax.n_rows)]), tax.features)
    with pytest.raises(FedriskError, match="bank.*tax"):
        run_vertical(
            {**parties, "tax": stranger},
            LABEL_HOLDER,
            splits,
            "logistic",
            FAST,
            VerticalConfig(),
            "inprocess",
            tmp_path,
            0,
        )


@pytest.mark.parametrize("case", ["no_label", "duplicate_ids", "unknown_split_ids", "no_partner", "bad_kind"])
def test_bad_input_reaching_the_driver_is_a_fedrisk_error(small_world, tmp_path, case):
    parties, splits = dict(small_world[0]), dict(small_world[1])
    bank, kind = parties["bank"], "logistic"
    if case == "no_label":
        parties["bank"] = PartyTable("bank", bank.ids, bank.features)
    elif case == "duplicate_ids":
        ids = bank.ids.copy()
        ids[1] = ids[0]
        parties["bank"] = PartyTable("bank", ids, bank.features, bank.label)
    elif case == "unknown_split_ids":
        splits["test"] = np.array(["nobody"])
    elif case == "no_partner":
        parties = {"bank": bank}
    else:
        kind = "forest"
    for driver in (
        lambda: run_vertical(
            parties, LABEL_HOLDER, splits, kind, FAST, VerticalConfig(), "inprocess", tmp_path, 0
        ),
        lambda: train_centralized_twin(parties, LABEL_HOLDER, splits, kind, FAST, VerticalConfig(), 0),
    ):
        with pytest.raises(FedriskError):
            driver()


def test_a_reused_alignment_must_be_of_these_parties(small_world, tmp_path):
    parties, splits = small_world
    applicants = np.concatenate(list(splits.values()))
    only_tax = _plain_intersection(LABEL_HOLDER, applicants, {"tax": parties["tax"].ids})
    with pytest.raises(FedriskError, match="supply_chain"):
        run_vertical(
            parties,
            LABEL_HOLDER,
            splits,
            "logistic",
            FAST,
            VerticalConfig(),
            "inprocess",
            tmp_path,
            0,
            only_tax,
        )


# ---------------------------------------------------------------------------------------------------------
# The holder's state survives a move to another process (what Flower's Ray engine does)


def test_holder_state_round_trip_continues_identically():
    torch.manual_seed(0)
    X = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    cfg = TrainConfig(lr=0.05)
    requests = [StepRequest(rows=np.arange(i, i + 10, dtype=np.int32)) for i in range(0, 40, 10)]
    grads = [np.random.default_rng(i).normal(size=(10, 4)).astype(np.float32) for i in range(4)]

    def run(switch_at: int | None) -> np.ndarray:
        holder = HolderBottom(make_bottom("mlp", 6, "tax", seed=1, embedding_dim=4), X, cfg)
        out = None
        for i, req in enumerate(requests):
            if i == switch_at:  # a fresh process: rebuild from the saved arrays only
                arrays = {k: np.array(v) for k, v in holder.state_arrays().items()}
                holder = HolderBottom(make_bottom("mlp", 6, "tax", seed=1, embedding_dim=4), X, cfg)
                holder.load_state_arrays(arrays)
            grad = grads[i - 1] if i else None
            out = holder.step(
                StepRequest(
                    snapshot=i == 2, grad=grad, rows=req.rows, eval_rows=np.arange(50, dtype=np.int32)
                )
            )
        final = holder.step(StepRequest(grad=grads[3], restore=True, eval_rows=np.arange(50, dtype=np.int32)))
        return np.concatenate([out.eval_embedding.ravel(), final.eval_embedding.ravel()])

    reference = run(None)
    for switch in (1, 3):
        np.testing.assert_array_equal(run(switch), reference)
    assert not np.array_equal(run(None)[:200], run(None)[200:])  # restore went back to an earlier state


# ---------------------------------------------------------------------------------------------------------
# The point of it all


def _plain_intersection(
    label_holder: str, label_ids: np.ndarray, partners: Mapping[str, np.ndarray], seed: int = 0
):
    """The intersection PSI computes, without the cryptography (PSI itself: test_psi_finds_exactly_...)."""
    shared = {}
    for name, ids in partners.items():
        common = np.asarray(label_ids)[np.isin(label_ids, ids)]
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        shared[name] = common[rng.permutation(len(common))]
    return Alignment(label_holder, shared, [], 0.0)


def _aligned(parties: Mapping[str, PartyTable], splits) -> Alignment:
    applicants = np.concatenate(list(splits.values()))
    return _plain_intersection(
        LABEL_HOLDER, applicants, {n: t.ids for n, t in parties.items() if n != LABEL_HOLDER}
    )


def test_federated_beats_the_bank_alone_on_a_default_world(tmp_path):
    """Default world and training settings; KS gain over bank-only LR with a paired bootstrap CI > 0.

    A larger test share (0.5) than the runner's default gives the CI its power on one seed.
    """
    world = generate_world(WorldConfig(), seed=0)
    splits = split_applicants(world.parties[LABEL_HOLDER], 0.5, 0.15, seed=0)
    applicants = np.concatenate(list(splits.values()))
    partners = {name: t.ids for name, t in world.parties.items() if name != LABEL_HOLDER}
    aligned = _plain_intersection(LABEL_HOLDER, applicants, partners)
    cfg = TrainConfig()
    fed = run_vertical(
        world.parties,
        LABEL_HOLDER,
        splits,
        "logistic",
        cfg,
        VerticalConfig(),
        "inprocess",
        tmp_path,
        0,
        aligned,
    )
    alone = siloed_vertical(world.parties[LABEL_HOLDER], splits, ModelConfig(kind="logistic"), cfg, seed=0)
    f, s = fed.scores["test"], alone.scores[(LABEL_HOLDER, "test")]
    assert np.array_equal(f.ids, s.ids)
    replicates = bootstrap_ks_auc(
        [{LABEL_HOLDER: {"federated": (f.y, f.p), "siloed": (s.y, s.p)}}], n_boot=400
    )
    low, high = np.percentile(replicates["ks:federated"] - replicates["ks:siloed"], [2.5, 97.5])
    assert low > 0, f"KS gain CI [{low:.3f}, {high:.3f}] includes zero"


def test_model_hidden_and_dropout_reach_the_split_network(small_world, tmp_path):
    """`model.hidden` sets the split-NN's bottoms (federated and its pooled twin) unless the vertical section
    sets its own; two widths give two different federated and centralized models."""
    from fedrisk.config import validate

    parties, splits = small_world
    scores = {}
    for hidden in ([4], [64, 32]):
        cfg = validate(
            {"model": {"kind": "mlp", "hidden": hidden}, "federation": {"vertical": {"psi_parallel": False}}}
        )
        vcfg = cfg.federation.vertical
        assert vcfg.bottom_hidden == hidden and vcfg.dropout == 0.0
        fed = run_vertical(
            parties, LABEL_HOLDER, splits, "mlp", FAST, vcfg, "inprocess", tmp_path / str(hidden), 5,
            _aligned(parties, splits),
        )  # fmt: skip
        twin = train_centralized_twin(parties, LABEL_HOLDER, splits, "mlp", FAST, vcfg, seed=5)
        np.testing.assert_allclose(fed.scores["test"].p, twin.scores["test"].p, atol=1e-4)
        scores[len(hidden)] = fed.scores["test"].p
    assert np.max(np.abs(scores[1] - scores[2])) > 1e-3
    own = validate(
        {"model": {"hidden": [4]}, "federation": {"vertical": {"bottom_hidden": [8], "dropout": 0.1}}}
    )
    assert own.federation.vertical.bottom_hidden == [8] and own.federation.vertical.dropout == 0.1
