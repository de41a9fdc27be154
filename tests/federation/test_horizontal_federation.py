"""Horizontal federation end to end (in-process, Flower Message API): statistics, SecAgg+, DP, failures."""

from __future__ import annotations

import numpy as np
import pytest

import fedrisk  # noqa: F401
from fedrisk.config.horizontal import HorizontalConfig
from fedrisk.config.model import TrainConfig
from fedrisk.core.errors import FedriskError
from fedrisk.data.splits import split_applicants
from fedrisk.data.synthetic import WorldConfig, generate_world
from fedrisk.federation import horizontal_client
from fedrisk.federation.channel import ClientFailure
from fedrisk.federation.horizontal import run_horizontal, shared_preprocessor
from fedrisk.federation.horizontal_secagg import secagg_error_bound
from fedrisk.federation.horizontal_server import load_round_models
from fedrisk.federation.privacy import epsilon

TRAIN = TrainConfig(lr=0.01, batch_size=256)


@pytest.fixture(scope="module")
def small():
    world = generate_world(WorldConfig(n_banks=3, n_firms=6000), seed=3)
    banks = {n: t for n, t in world.parties.items() if n.startswith("bank_")}
    splits = {n: split_applicants(t, 0.3, 0.15, 3) for n, t in banks.items()}
    return banks, splits


def _run(small, tmp_path, name, backend="inprocess", **horizontal):
    banks, splits = small
    hcfg = HorizontalConfig(**{"rounds": 2, **horizontal})
    return run_horizontal(banks, splits, "logistic", TRAIN, hcfg, backend, tmp_path / name, seed=7)


def _scores(outcome) -> np.ndarray:
    return np.concatenate([outcome.scores[k].p for k in sorted(outcome.scores)])


@pytest.fixture(scope="module")
def plain_dir(small, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("plain")
    return _run(small, workdir, "run"), workdir / "run"


@pytest.fixture(scope="module")
def plain(plain_dir):
    return plain_dir[0]


def test_federated_statistics_equal_the_row_weighted_pool(small, plain):
    banks, splits = small
    reference = shared_preprocessor(banks, splits)
    assert plain.preprocessor.feature_names_ == reference.feature_names_
    np.testing.assert_allclose(plain.preprocessor.mean, reference.mean, rtol=1e-12)
    np.testing.assert_allclose(plain.preprocessor.scale, reference.scale, rtol=1e-12)
    # and they are the pooled statistics (checked here by pooling, which the federation never does)
    train_rows = np.concatenate(
        [
            banks[n].features["interest_rate"].to_numpy()[np.isin(banks[n].ids, splits[n]["train"])]
            for n in banks
        ]
    )
    j = reference.numeric.index("interest_rate")
    assert plain.preprocessor.mean[j] == pytest.approx(np.nanmean(train_rows), rel=1e-10)
    assert plain.preprocessor.scale[j] == pytest.approx(np.nanstd(train_rows), rel=1e-10)


def test_outcome_shape(small, plain):
    banks, _ = small
    # val: approval cut-offs; oot: the later cohort the world holds out by default
    assert set(plain.scores) == {(n, s) for n in banks for s in ("val", "test", "oot")}
    assert [r["round"] for r in plain.history] == [1, 2]
    assert (
        plain.bytes_sent >= plain.history[-1]["bytes_cumulative"] > plain.history[0]["bytes_cumulative"] > 0
    )
    assert plain.epsilon is None and plain.delta is None
    assert all(np.isfinite(s.p).all() for s in plain.scores.values())


def test_secagg_equals_plain_fedavg_up_to_quantisation(small, plain_dir, tmp_path):
    plain, plain_workdir = plain_dir
    secure = _run(
        small, tmp_path, "secagg", secagg={"enabled": True, "num_shares": 3, "reconstruction_threshold": 2}
    )
    banks, splits = small
    rows = [len(splits[n]["train"]) for n in banks]
    max_weight = max(rows)
    # round 1 starts from the same model: its aggregate differs only by SecAgg+'s quantisation
    secure_r1 = load_round_models(tmp_path / "secagg" / "server")[1]
    plain_r1 = load_round_models(plain_workdir / "server")[1]
    largest = max(float(np.abs(a).max()) for a in plain_r1)
    bound = secagg_error_bound([n / max_weight for n in rows], 8.0, 2**22, largest)
    for a, b in zip(secure_r1, plain_r1, strict=True):
        assert np.abs(a - b).max() <= bound
    # after two rounds the scores agree to well under a basis point of PD
    np.testing.assert_allclose(_scores(secure), _scores(plain), atol=1e-4)
    assert secure.bytes_sent > plain.bytes_sent  # the protocol's four stages cost bytes


def test_infinite_epsilon_reproduces_the_non_dp_run(small, plain, tmp_path):
    off = _run(small, tmp_path, "inf", dp={"mode": "server-fixed", "target_epsilon": "inf"})
    np.testing.assert_array_equal(_scores(off), _scores(plain))
    assert off.epsilon is None


@pytest.mark.parametrize(
    "dp",
    [
        {"mode": "server-fixed", "noise_multiplier": 1.0, "clipping_norm": 0.5},
        {"mode": "client-adaptive", "noise_multiplier": 0.2, "clipped_count_stddev": 1.0},
        {"mode": "local", "target_epsilon": 20.0},
    ],
)
def test_dp_runs_report_the_accountants_epsilon(small, plain, tmp_path, dp):
    out = _run(small, tmp_path, dp["mode"], dp=dp)
    z = out.privacy["noise_multiplier"]
    assert out.epsilon == pytest.approx(epsilon(z, 2, 1.0, 1e-5))
    assert out.delta == 1e-5
    assert all(r["train_loss"] is None for r in out.history)  # no unnoised per-bank metrics under DP
    assert not np.allclose(_scores(out), _scores(plain), atol=1e-3)  # the noise is really there


def test_a_failing_client_fails_the_run_with_its_error(small, tmp_path, monkeypatch):
    original = horizontal_client.local_train

    def flaky(model, rows, job, config, bank):
        if bank == "bank_2" and config["server-round"] == 2:
            raise ValueError("disk full at bank_2")
        return original(model, rows, job, config, bank)

    monkeypatch.setattr(horizontal_client, "local_train", flaky)
    with pytest.raises(ClientFailure) as info:
        _run(small, tmp_path, "flaky")
    assert info.value.party == "bank_2"
    assert "disk full at bank_2" in str(info.value)


@pytest.mark.slow
def test_ray_backend_runs_the_same_apps(small, plain, tmp_path):
    on_ray = _run(small, tmp_path, "ray", backend="ray")
    # same apps, same seeds: only the order of floating-point sums may differ
    np.testing.assert_allclose(_scores(on_ray), _scores(plain), atol=1e-5)


def test_patience_stops_the_rounds_and_epochs_cap_them(small, tmp_path):
    banks, splits = small
    # min_delta 1.0 is more than any later improvement of a BCE loss that starts below 1: only round 1 "improves", so patience (3 epochs = 2 rounds of 2) stops
    # the run after round 3 of 5
    train = TrainConfig(lr=0.01, batch_size=256, epochs=10, patience=3, min_delta=1.0)
    hcfg = HorizontalConfig(rounds=5, local_epochs=2)
    out = run_horizontal(banks, splits, "logistic", train, hcfg, "inprocess", tmp_path / "p", seed=7)
    assert [r["round"] for r in out.history] == [1, 2, 3]
    assert out.extra["stopped"] == "patience" and out.extra["rounds_run"] == 3
    assert out.extra["kept_round"] == min(out.history, key=lambda r: r["val_loss"])["round"]
    with pytest.raises(FedriskError, match="training.epochs"):
        run_horizontal(banks, splits, "logistic", train, hcfg.model_copy(update={"rounds": 6}), "inprocess", tmp_path / "q", seed=7)  # fmt: skip


def test_flower_warns_about_nothing(small, tmp_path):
    """Message-API strategies get fedrisk's metric aggregation: no warnings in a plain or a DP run."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(handler)
    try:
        _run(small, tmp_path, "quiet", dp={"mode": "client-fixed", "noise_multiplier": 0.5})
    finally:
        flwr_logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []


def test_centralized_baseline_encodes_with_the_federations_max_categories(small):
    from fedrisk.methods.baselines import centralized_horizontal
    from fedrisk.models import ModelConfig

    banks, splits = small
    assert (
        shared_preprocessor(banks, splits, 2).n_features_out_
        < shared_preprocessor(banks, splits, 20).n_features_out_
    )
    train = TrainConfig(lr=0.01, batch_size=256, epochs=2)

    def scores(**kw):
        return _scores(centralized_horizontal(banks, splits, ModelConfig(), train, 0, **kw))

    np.testing.assert_array_equal(scores(max_categories=20), scores())
    assert not np.allclose(scores(max_categories=2), scores(), atol=1e-4)


def test_keep_and_fraction_evaluate_choose_the_model_and_who_reports(small, tmp_path):
    banks, splits = small
    train = TrainConfig(lr=0.2, batch_size=256, epochs=4, patience=0)  # lr 0.2: round 2 beats rounds 3-4

    def run(name, **horizontal):
        hcfg = HorizontalConfig(rounds=4, **horizontal)
        return run_horizontal(banks, splits, "logistic", train, hcfg, "inprocess", tmp_path / name, seed=7)

    best, last = run("best"), run("last", keep="last")
    losses = [r["val_loss"] for r in best.history]
    assert best.extra["kept_round"] == 1 + int(np.argmin(losses)) == 2 and last.extra["kept_round"] == 4
    assert not np.allclose(_scores(best), _scores(last), atol=1e-4)
    silent = run("silent", keep="last", fraction_evaluate=0.0)  # nobody evaluates: same training, no reports
    assert all(r["val_loss"] is None for r in silent.history)
    assert silent.bytes_sent < last.bytes_sent
    np.testing.assert_allclose(_scores(silent), _scores(last), atol=1e-6)


def test_secagg_settings_reach_flowers_workflow_and_a_modulus_that_wraps_is_refused():
    """SecAgg+'s shares, threshold and ranges shape the protocol, not the (unmasked) sum a healthy run gets:
    they are shown by reaching Flower's ``SecAggPlusWorkflow``, and a modulus too small for the sum fails."""
    from fedrisk.config.horizontal import HorizontalJob
    from fedrisk.federation.horizontal_secagg import secagg_workflow

    secagg = {
        "enabled": True,
        "num_shares": 5,
        "reconstruction_threshold": 3,
        "clipping_range": 2.0,
        "quantization_range": 2**10,
        "modulus_range": 2**16,
        "max_weight": 50.0,
        "timeout": 30.0,
    }
    job = HorizontalJob(
        horizontal=HorizontalConfig(secagg=secagg), train=TRAIN, max_weight=50.0, max_rows=900
    )
    flow = secagg_workflow(job, 6)
    got = {k: getattr(flow, k) for k in secagg if k != "enabled"}
    assert got == {k: v for k, v in secagg.items() if k != "enabled"}
    stats = secagg_workflow(job, 6, stats=True)  # moments in [0, 1], weights up to the largest bank's rows
    assert (stats.clipping_range, stats.max_weight, stats.quantization_range) == (1.0, 900.0, 2**13)
    wrapping = job.model_copy(
        update={"horizontal": HorizontalConfig(secagg={**secagg, "modulus_range": 2**12})}
    )
    with pytest.raises(FedriskError, match="federation.horizontal.secagg.modulus_range"):
        secagg_workflow(wrapping, 6)
