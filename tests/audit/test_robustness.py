"""Robustness audit: a poisoned bank breaks FedAvg but not the robust rules; dropouts are survived and reported.

Measured at this world (5 banks, 20k firms, 10 rounds x 2 local epochs, sign flip x5 by the largest bank),
seeds 0/1/2: FedAvg loses 7.8/28.9/32.5 KS points (its kept model ranks applicants backwards, AUC < 0.5);
FedMedian moves +0.0/-0.0/-0.3 points, MultiKrum -0.0/-0.8/-0.1, FedTrimmedAvg -0.8/-0.7/-0.9, Krum
+0.2/0.0/-1.2. The test runs seed 0 with 8 rounds.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

import fedrisk  # noqa: F401 - Flower's environment before flwr runs
from fedrisk.audit.robustness import (
    RobustnessConfig,
    choose_poisoned,
    dropout_audit,
    robustness_audit,
)
from fedrisk.config.experiment import validate
from fedrisk.core.errors import FedriskError
from fedrisk.data.setting import build_setting
from fedrisk.federation.attacks import UpdatePoisoningMod, flip_labels, poison_update

SEED = 0


def _config(**horizontal):
    return validate(
        {
            "seeds": [SEED],
            "world": {"n_banks": 5, "n_firms": 20_000},
            "training": {"lr": 0.01, "batch_size": 256},
            "federation": {"horizontal": {"rounds": 8, "local_epochs": 2, **horizontal}},
        }
    )


@pytest.fixture(scope="module")
def world():
    config = _config()
    return config, build_setting(config, SEED)


@pytest.fixture(scope="module")
def audit(world, tmp_path_factory):
    config, setting = world
    cfg = RobustnessConfig(
        enabled=True,
        strategies=["fedavg", "fedmedian", "multikrum"],
        attack="sign_flip",
        scale=5.0,
        dropout_fraction=0.4,
    )
    return robustness_audit(config, setting, SEED, cfg, tmp_path_factory.mktemp("robustness"))


# --- the attack mechanics -----------------------------------------------------------------------------


def test_poison_update_flips_or_scales_the_update_not_the_model():
    g = [np.array([1.0, 2.0], dtype=np.float32), np.array([0.5])]
    w = [np.array([1.5, 1.0], dtype=np.float32), np.array([0.0])]
    flipped = poison_update(g, w, "sign_flip", 2.0)
    np.testing.assert_allclose(flipped[0], [0.0, 4.0])  # g - 2 (w - g)
    np.testing.assert_allclose(flipped[1], [1.5])
    assert flipped[0].dtype == np.float32
    np.testing.assert_allclose(poison_update(g, w, "scale", 3.0)[0], [2.5, -1.0])  # g + 3 (w - g)


@pytest.fixture
def task_identity(monkeypatch):
    """Flower stamps every new Message with the process's task identity (an engine sets it; we do)."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_run_id", 1), ("_node_id", 1), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)


def _arrays(params) -> ArrayRecord:
    return ArrayRecord({str(i): Array(np.asarray(p)) for i, p in enumerate(params)})


def _train_message(params, config, message_type=MessageType.TRAIN) -> Message:
    content = RecordDict({"arrays": _arrays(params), "config": ConfigRecord(config)})
    return Message(content, dst_node_id=1001, message_type=message_type, group_id="1")


def _context(party: str) -> Context:
    return Context(1, 1001, {"party": party, "data-path": "/nonexistent"}, RecordDict(), {})


def _reply_with(params):
    def call_next(msg: Message, ctxt: Context) -> Message:
        content = RecordDict({"arrays": _arrays(params), "metrics": MetricRecord({"num-examples": 10})})
        return Message(content, reply_to=msg)

    return call_next


def _sent(out: Message) -> np.ndarray:
    return out.content["arrays"].to_numpy_ndarrays()[0]


def test_mod_poisons_only_the_named_bank_and_only_training(task_identity):
    mod = UpdatePoisoningMod(frozenset({"bank_2"}), "sign_flip", 1.0)
    g, w = [np.array([1.0, 1.0])], [np.array([2.0, 0.0])]
    np.testing.assert_allclose(
        _sent(mod(_train_message(g, {"server-round": 1}), _context("bank_2"), _reply_with(w))), [0.0, 2.0]
    )
    np.testing.assert_allclose(
        _sent(mod(_train_message(g, {"server-round": 1}), _context("bank_1"), _reply_with(w))), [2.0, 0.0]
    )
    stats = _train_message(g, {}, message_type="train.stats")  # the preprocessing moments are left alone
    np.testing.assert_allclose(_sent(mod(stats, _context("bank_2"), _reply_with(w))), [2.0, 0.0])


def test_flip_labels_flips_only_the_named_rows(world):
    _, setting = world
    bank = setting.parties["bank_1"]
    own = setting.splits["bank_1"]["train"]
    flipped = flip_labels(bank, own)
    inside = np.isin(bank.ids, own)
    assert np.array_equal(flipped.label[inside], 1 - bank.label[inside])
    assert np.array_equal(flipped.label[~inside], bank.label[~inside])
    assert flipped.meta["labels_flipped"] == len(own)


def test_config_rejects_unknown_strategies_and_keys():
    with pytest.raises(ValueError, match="unknown strategies"):
        RobustnessConfig(strategies=["fedavg", "fedmagic"])
    with pytest.raises(ValueError, match="Extra inputs"):
        RobustnessConfig.model_validate({"enabled": True, "poisoned": 1})
    with pytest.raises(ValueError, match="not listed"):
        RobustnessConfig(strategies=["fedavg"], strategy_params={"krum": {"num_malicious_nodes": 2}})


def test_half_the_banks_poisoned_is_refused(world, tmp_path):
    config, setting = world
    with pytest.raises(FedriskError, match="poisoned_banks"):
        robustness_audit(config, setting, SEED, RobustnessConfig(enabled=True, poisoned_banks=3), tmp_path)


def test_disabled_and_vertical_are_no_ops(tmp_path):
    config = validate({"seeds": [0], "world": {"n_firms": 3000}})
    assert robustness_audit(config, None, 0, RobustnessConfig(), tmp_path) == {"enabled": False}  # type: ignore[arg-type]
    setting = build_setting(config, 0)
    assert "skipped" in robustness_audit(config, setting, 0, RobustnessConfig(enabled=True), tmp_path)


# --- the audit end to end -----------------------------------------------------------------------------


def test_the_largest_bank_attacks_and_is_not_scored(world, audit):
    _, setting = world
    assert audit["poisoned"] == choose_poisoned(setting, 1)
    largest = max(setting.label_holders, key=lambda b: len(setting.splits[b]["train"]))
    assert audit["poisoned"] == [largest]
    assert largest not in audit["strategies"]["fedavg"]["attacked"]["ks_by_bank"]


def test_poisoned_fedavg_loses_ks_clearly(audit):
    fedavg = audit["strategies"]["fedavg"]
    assert fedavg["clean"]["ks"] > 0.3
    assert fedavg["ks_gap"] < -0.05, fedavg
    assert not fedavg["within_goal"]


def test_a_robust_strategy_stays_within_two_points_of_clean(audit):
    median = audit["strategies"]["fedmedian"]
    assert median["ks_gap"] >= -0.02, median
    assert median["within_goal"]
    assert "fedmedian" in audit["robust_within_goal"]
    # and against clean FedAvg, the model the consortium would have had without the attacker
    assert median["ks_gap_vs_clean_fedavg"] >= -0.03


def test_result_is_json_serialisable(audit):
    import json

    multikrum = json.loads(json.dumps(audit))["strategies"]["multikrum"]
    assert multikrum["strategy"] == "multikrum"  # Flower's own MultiKrum, keeping n - f updates
    assert multikrum["params"] == {"num_malicious_nodes": 1, "num_nodes_to_select": 4}


def test_dropout_run_continues_and_reports_what_it_lost(world, audit):
    _, setting = world
    dropped = audit["dropout"]["dropped"]
    assert dropped["survived"]
    assert len(dropped["per_round"]) == 8
    for row in dropped["per_round"]:  # 40% of 5 banks absent: 3 train, 2 are lost, every round
        assert len(row["trained"]) == 3 and len(row["absent"]) == 2
        assert set(row["trained"]) | set(row["absent"]) == set(setting.label_holders)
        assert 0 < row["rows_lost"] < 1
    assert sum(dropped["rounds_missed"].values()) == 8 * 2
    assert abs(dropped["ks_gap"]) < 0.05  # losing banks at random costs little here; measured -0.01..+0.01
    secagg = audit["dropout"]["dropped_secagg"]
    assert secagg["survived"] and secagg["mean_banks_per_round"] == 3 >= secagg["min_banks_per_round"]


def test_secagg_below_its_threshold_fails_with_a_reason(world, tmp_path):
    config, setting = world
    cfg = RobustnessConfig(enabled=True, dropout_fraction=0.6)  # 2 of 5 banks per round: below SecAgg+'s 3
    out = dropout_audit(config, setting, SEED, cfg, tmp_path, rounds=2)
    assert out["dropped"]["survived"]  # plain FedAvg carries on with 2 banks
    assert out["dropped"]["mean_banks_per_round"] == 2
    assert out["dropped_secagg"]["survived"] is False
    assert "SecAgg+ needs at least 3" in out["dropped_secagg"]["error"]
