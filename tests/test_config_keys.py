"""Every config key is honoured or rejected: a walk over the schema, one probe per key.

For each leaf key of `ExperimentConfig`, `PROBES` says how a changed value shows in what the run does:

* ``world``       — the generated tables change (small world, seed 0);
* ``split``       — the label holder's split changes;
* ``run:<method>``— the scores of that method on a small vertical (or ``hrun:`` horizontal) setting change;
* ``summary``     — the summary of fixed scores changes (evaluation keys);
* ``rejected``    — the value is refused for this setting with a one-line error naming the key;
* ``test:<path>::<name>`` — a dedicated test shows it (audits, runner, data sources); it must exist.

A new key without a probe fails `test_every_key_has_a_probe`, so nothing is added silently ignored.
The cheap probes run in the default suite; the ones that train a federation are marked slow.
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

import fedrisk  # noqa: F401 - Flower's environment first
from fedrisk.config import ExperimentConfig, set_dotted, validate
from fedrisk.core.errors import FedriskError

ROOT = Path(__file__).resolve().parents[1]

SMALL = {
    "seeds": [0],
    "world": {"n_firms": 3000},
    "training": {"epochs": 3, "patience": 0, "batch_size": 256},
    "federation": {"vertical": {"psi_parallel": False}, "horizontal": {"rounds": 2}},
}
HORIZONTAL = {"world": {"n_banks": 3}, "topology": "horizontal"}

# key: (probe, value to set, base overrides for the probe (optional))
PROBES: dict[str, tuple[str, Any] | tuple[str, Any, dict]] = {
    "name": ("test:tests/runner/test_end_to_end.py::test_cli_vertical_run_conforms_to_the_contract", None),
    "topology": ("rejected", "horizontal"),
    "seeds": (
        "test:tests/runner/test_runner.py::test_interrupted_run_resumes_without_redoing_finished_units",
        None,
    ),
    "sweep": ("test:tests/test_config.py::test_sweep_expands_the_grid_and_validates_values", None),
    # the world
    **{
        k: ("world", v)
        for k, v in {
            "world.n_firms": 2500,
            "world.default_rate": 0.12,
            "world.asset_correlation": 0.3,
            "world.factors.financial_operating": 0.6,
            "world.factors.financial_chain": 0.6,
            "world.factors.operating_chain": 0.6,
            "world.mnar_strength": 2.0,
            "world.bank.coverage": 0.5,
            "world.bank.signal": 0.2,
            "world.bank.noise": 2.0,
            "world.bank.missing_rate": 0.3,
            "world.tax.coverage": 0.5,
            "world.tax.signal": 0.2,
            "world.tax.noise": 2.0,
            "world.tax.missing_rate": 0.3,
            "world.supply_chain.coverage": 0.3,
            "world.supply_chain.signal": 0.2,
            "world.supply_chain.noise": 2.0,
            "world.supply_chain.missing_rate": 0.3,
            "world.supply_chain.core_fraction": 0.02,
            "world.supply_chain.mean_buyers": 6.0,
            "world.supply_chain.attractiveness_tail": 1.5,
            "world.supply_chain.contagion": 0.9,
            "world.supply_chain.contagion_steps": 3,
            "world.supply_chain.concentration_risk": 1.0,
        }.items()
    },
    "world.out_of_time.fraction": ("world", 0.4),
    "world.out_of_time.drift": (
        "world",
        1.0,
        {"world": {"n_firms": 3000, "out_of_time": {"fraction": 0.25}}},
    ),
    **{
        k: ("world", v, HORIZONTAL)
        for k, v in {
            "world.n_banks": 4,
            "world.banks.multi_head_rate": 0.3,
            "world.banks.multi_head_risk": 2.0,
            "world.banks.size_concentration": 0.3,
            "world.banks.mix_concentration": 0.5,
            "world.banks.feature_shift": 1.0,
            "world.banks.region_concentration": 0.2,
            "world.banks.sector_concentration": 0.2,
            "world.banks.risk_concentration": 0.2,
            "world.banks.concept_shift": 1.0,
            "world.banks.profile_seed": 3,
            "world.banks.label_dpd": [60],
        }.items()
    },
    "world.bank.past_approval_rate": ("split", 0.5, {"split": {"accepted_only": True}}),
    # splits
    "split.test_fraction": ("split", 0.4),
    "split.val_fraction": ("split", 0.3),
    "split.out_of_time": ("split", False, {"world": {"n_firms": 3000, "out_of_time": {"fraction": 0.25}}}),
    "split.accepted_only": ("split", True),
    # data
    "data.source": (
        "test:tests/runner/test_runner.py::test_baselines_run_writes_contract_keys_and_pooled_beats_bank",
        None,
    ),
    "data.parties": (
        "test:tests/runner/test_runner.py::test_baselines_run_writes_contract_keys_and_pooled_beats_bank",
        None,
    ),
    "data.partners": ("run:federated", ["tax"]),
    "data.min_overlap": (
        "test:tests/runner/test_runner.py::test_overlap_below_min_overlap_is_refused_before_any_output",
        None,
    ),
    # model and training: the same keys reach siloed, centralized and federated
    "model.kind": ("run:siloed", "mlp"),
    "model.hidden": ("run:centralized", [4], {"model": {"kind": "mlp"}}),
    "model.dropout": ("run:centralized", 0.5, {"model": {"kind": "mlp"}}),
    # gradient-boosted trees: xgboost's siloed model takes every tree key (federated trees: tests/federation)
    **{
        k: ("run:siloed", v, {"model": {"kind": "gbdt", "n_trees": 20}})
        for k, v in {
            "model.n_trees": 5,
            "model.max_depth": 2,
            "model.learning_rate": 0.3,
            "model.max_bins": 64,
            "model.min_child_weight": 20.0,
            "model.reg_lambda": 50.0,
            "model.gamma": 1.0,
            "model.early_stopping_rounds": 1,
        }.items()
    },
    "training.epochs": ("run:siloed", 1),
    "training.batch_size": ("run:siloed", 64),
    "training.lr": ("run:siloed", 0.1),
    "training.weight_decay": ("run:siloed", 0.1),
    "training.patience": ("run:siloed", 1, {"training": {"epochs": 10, "lr": 0.5, "min_delta": 0.01}}),
    "training.min_delta": ("run:siloed", 0.05, {"training": {"epochs": 8, "patience": 2}}),
    "training.num_threads": ("test:tests/test_config_keys.py::test_num_threads_reaches_torch", None),
    "training.lr_grid": (
        "test:tests/methods/test_tuning.py::test_method_tries_the_grid_and_keeps_the_lowest_validation_loss",
        None,
    ),
    "training.weight_decay_grid": (
        "test:tests/methods/test_tuning.py::test_method_tries_the_grid_and_keeps_the_lowest_validation_loss",
        None,
    ),
    # vertical federation
    "federation.backend": (
        "test:tests/federation/test_vertical_ray.py::test_ray_backend_gives_the_in_process_result",
        None,
    ),
    "federation.ray_address": (
        "test:tests/deploy/test_ray_cluster.py::test_the_driver_passes_the_cluster_address_to_flowers_simulation",
        None,
    ),
    "federation.vertical.batch_size": ("run:centralized", 64),
    "federation.vertical.full_batch": ("run:centralized", True),
    "federation.vertical.embedding_dim": ("run:centralized", 2, {"model": {"kind": "mlp"}}),
    "federation.vertical.bottom_hidden": ("run:centralized", [3], {"model": {"kind": "mlp"}}),
    "federation.vertical.top_hidden": ("run:centralized", [3], {"model": {"kind": "mlp"}}),
    "federation.vertical.dropout": ("run:centralized", 0.5, {"model": {"kind": "mlp"}}),
    "federation.vertical.psi_parallel": (
        "test:tests/parties/test_psi.py::test_parallel_and_serial_agree",
        None,
    ),
    "federation.vertical.psi_fpr": ("run:federated", 0.5),
    "federation.vertical.protection": ("run:federated", "noise"),
    "federation.vertical.noise_multiplier": (
        "run:federated",
        4.0,
        {"federation": {"vertical": {"protection": "noise"}}},
    ),
    "federation.vertical.label_dp_epsilon": (
        "run:federated",
        0.5,
        {"federation": {"vertical": {"protection": "label_dp", "label_dp_epsilon": 4.0}}},
    ),
    "federation.vertical.he_scheme": (
        "run:federated",
        "paillier",
        {"federation": {"vertical": {"protection": "he"}}},
    ),
    "federation.vertical.he_key_bits": (
        "run:federated",
        16384,
        {"federation": {"vertical": {"protection": "he"}}},
    ),
    # evaluation
    "evaluation.approval_rate": ("summary", 0.5),
    "evaluation.n_bootstrap": ("summary", 50),
    "evaluation.ci_level": ("summary", 0.8),
    "evaluation.reference_models": (
        "test:tests/runner/test_runner.py::test_reference_models_add_sklearn_rows",
        None,
    ),
    # runner
    "runner.workers": ("test:tests/test_config_keys.py::test_two_workers_use_a_process_pool_and_agree", None),
    "runner.flower_log_level": ("test:tests/test_fuzz_inputs.py::test_bad_input_ends_in_one_line", None),
    "runner.private_outputs": (
        "test:tests/test_outputs.py::test_private_outputs_make_the_results_directory_owner_only",
        None,
    ),
}
SECAGG = {**HORIZONTAL, "federation": {"horizontal": {"secagg": {"enabled": True}}}}
PERSONAL = {
    **HORIZONTAL,
    "world": {"n_firms": 3000, "n_banks": 3, "banks": {"concept_shift": 1.0}},
    "federation": {
        "horizontal": {"personalization": "finetune", "personal": {"epochs": 12, "folds": 3, "lr": 0.05}}
    },
}
DP = {
    **HORIZONTAL,
    "federation": {
        "horizontal": {
            "dp": {"mode": "server-adaptive", "noise_multiplier": 0.5, "clipped_count_stddev": 5.0}
        }
    },
}
PROBES.update(
    {
        "federation.horizontal.strategy": ("hrun:federated", "fedmedian", HORIZONTAL),
        "federation.horizontal.strategy_params": (
            "hrun:federated",
            {"proximal_mu": 1.0},
            {**HORIZONTAL, "federation": {"horizontal": {"strategy": "fedprox"}}},
        ),
        "federation.horizontal.rounds": ("hrun:federated", 1, HORIZONTAL),
        "federation.horizontal.local_epochs": (  # 2 rounds x 3 local epochs within training.epochs
            "hrun:federated",
            3,
            {**HORIZONTAL, "training": {"epochs": 6}},
        ),
        "federation.horizontal.fraction_fit": ("hrun:federated", 0.67, HORIZONTAL),
        "federation.horizontal.fraction_evaluate": (
            "test:tests/federation/test_horizontal_federation.py::"
            "test_keep_and_fraction_evaluate_choose_the_model_and_who_reports",
            None,
        ),
        "federation.horizontal.max_categories": ("hrun:federated", 2, HORIZONTAL),
        "federation.horizontal.keep": (
            "test:tests/federation/test_horizontal_federation.py::"
            "test_keep_and_fraction_evaluate_choose_the_model_and_who_reports",
            None,
        ),
        "federation.horizontal.secagg.enabled": ("hrun:federated", True, HORIZONTAL),
        "federation.horizontal.secagg.num_shares": (
            "test:tests/federation/test_horizontal_federation.py::"
            "test_secagg_settings_reach_flowers_workflow_and_a_modulus_that_wraps_is_refused",
            None,
        ),
        "federation.horizontal.secagg.reconstruction_threshold": (
            "test:tests/federation/test_horizontal_federation.py::"
            "test_secagg_settings_reach_flowers_workflow_and_a_modulus_that_wraps_is_refused",
            None,
        ),
        "federation.horizontal.secagg.clipping_range": ("hrun:federated", 0.5, SECAGG),
        "federation.horizontal.secagg.quantization_range": ("hrun:federated", 2**6, SECAGG),
        "federation.horizontal.secagg.modulus_range": (
            "test:tests/federation/test_horizontal_federation.py::"
            "test_secagg_settings_reach_flowers_workflow_and_a_modulus_that_wraps_is_refused",
            None,
        ),
        "federation.horizontal.secagg.max_weight": (
            "test:tests/federation/test_horizontal_federation.py::"
            "test_secagg_settings_reach_flowers_workflow_and_a_modulus_that_wraps_is_refused",
            None,
        ),
        "federation.horizontal.secagg.timeout": (
            "test:tests/federation/test_horizontal_federation.py::"
            "test_secagg_settings_reach_flowers_workflow_and_a_modulus_that_wraps_is_refused",
            None,
        ),
        "federation.horizontal.dp.mode": (
            "hrun:federated",
            "server-fixed",
            {**HORIZONTAL, "federation": {"horizontal": {"dp": {"noise_multiplier": 0.5}}}},
        ),
        "federation.horizontal.dp.noise_multiplier": ("hrun:federated", 2.0, DP),
        "federation.horizontal.dp.target_epsilon": (
            "hrun:federated",
            5.0,
            {  # from "inf" (DP off) to 5
                **HORIZONTAL,
                "federation": {"horizontal": {"dp": {"mode": "server-fixed", "target_epsilon": "inf"}}},
            },
        ),
        "federation.horizontal.personalization": ("hrun:personalized", "clustered", PERSONAL),
        **{
            f"federation.horizontal.personal.{k}": ("hrun:personalized", v, PERSONAL)
            for k, v in {
                "epochs": 1,
                "folds": 2,
                "patience": 1,
                "select": "loss",
                "lr": 0.2,
                "min_defaults": 100_000,
            }.items()
        },
        "federation.horizontal.personal.ditto_lambda": (
            "hrun:personalized",
            100.0,
            {**PERSONAL, "federation": {"horizontal": {"personalization": "ditto"}}},
        ),
        "federation.horizontal.personal.cluster_rounds": (
            "hrun:personalized",
            1,
            {**PERSONAL, "federation": {"horizontal": {"personalization": "clustered"}}},
        ),
        "federation.horizontal.personal.clusters": (
            "test:tests/federation/test_personalization.py::test_banks_cluster_by_the_direction_of_their_updates",
            None,
        ),
        "federation.horizontal.personal.max_clusters": (
            "test:tests/federation/test_personalization.py::test_banks_cluster_by_the_direction_of_their_updates",
            None,
        ),
        "federation.horizontal.dp.delta": ("hrun:federated", 1e-3, DP),
        "federation.horizontal.dp.clipping_norm": ("hrun:federated", 0.01, DP),
        "federation.horizontal.dp.target_clipped_quantile": ("hrun:federated", 0.1, DP),
        "federation.horizontal.dp.clip_norm_lr": ("hrun:federated", 2.0, DP),
        "federation.horizontal.dp.clipped_count_stddev": ("hrun:federated", 10.0, DP),
        "federation.horizontal.dp.sampling": (
            "hrun:federated",
            "none",
            {
                **HORIZONTAL,
                "federation": {
                    "horizontal": {"fraction_fit": 0.67, "dp": DP["federation"]["horizontal"]["dp"]}
                },
            },
        ),
    }
)
# Audits are shown by their own tests (each trains several federations): the key's name must appear there.
PREFIX_TESTS = {"audit.": "tests/audit"}
UNPROBED = {
    "audit.membership.target_fpr": "reported rates follow it; no dedicated test yet",
    "audit.membership.dp.delta": "the reported epsilon follows it; no dedicated test yet",
    "audit.label_leakage.max_train_rows": "caps the audited run; no dedicated test yet",
    "audit.robustness.dropout_secagg": "adds the SecAgg+ dropout run; no dedicated test yet",
    "audit.robustness.max_ks_drop": "the goal line in the report; no dedicated test yet",
    "audit.fairness.gap_group_value": "the followed gap; no dedicated test yet",
    "audit.fairness.gap_reference": "the followed gap; no dedicated test yet",
}
"""Keys without a probe yet, each with the reason: listed so the gap is visible, not silent."""


def _leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _leaves(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


KEYS = _leaves(ExperimentConfig)


def _prefix_covered(key: str) -> str | None:
    for prefix, where in PREFIX_TESTS.items():
        if key.startswith(prefix):
            leaf = key[len(prefix) :].split(".")[-1]
            text = (
                "\n".join(p.read_text() for p in (ROOT / where).rglob("*.py"))
                if (ROOT / where).is_dir()
                else ((ROOT / where).read_text())
            )
            return where if re.search(rf"\b{re.escape(leaf)}\b", text) else None
    return None


def test_every_key_has_a_probe():
    missing = [k for k in KEYS if k not in PROBES and k not in UNPROBED and not _prefix_covered(k)]
    assert not missing, f"add a probe (or a test that uses the key) for: {missing}"
    stale = sorted((set(PROBES) | set(UNPROBED)) - set(KEYS))
    assert not stale, f"probes for keys that no longer exist: {stale}"


@pytest.mark.parametrize("key", sorted(k for k, p in PROBES.items() if p[0].startswith("test:")))
def test_dedicated_tests_exist(key):
    path, name = PROBES[key][0][len("test:") :].split("::")
    assert re.search(rf"def {re.escape(name)}\(", (ROOT / path).read_text()), (
        f"{key}: {path}::{name} is missing"
    )


# ---------------------------------------------------------------------------------------------------------
# The probes


def _config(key: str, value: Any | None) -> ExperimentConfig:
    probe = PROBES[key]
    data = copy.deepcopy(_merge(SMALL, probe[2] if len(probe) > 2 else {}))  # set_dotted mutates
    if data.get("model", {}).get("kind") == "gbdt":
        data.pop("training")  # the neural optimiser's keys are refused with trees
    if value is not None:
        set_dotted(data, key, value)
    return validate(data)


def _merge(a: dict, b: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in a.items()}
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _digest(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=object).astype(str)).tobytes())
    return h.hexdigest()


def _world_digest(cfg: ExperimentConfig) -> str:
    from fedrisk.data.synthetic import generate_world

    parties = generate_world(cfg.world, 0).parties
    columns = [
        (
            t.ids,
            t.features.to_numpy(),
            [] if t.label is None else t.label,
            [] if t.cohort is None else t.cohort,
        )
        for t in parties.values()
    ]
    return _digest(*[x for c in columns for x in c])


def _split_digest(cfg: ExperimentConfig) -> str:
    from fedrisk.data.setting import build_setting

    setting = build_setting(cfg, 0)
    return _digest(*[ids for s in setting.splits.values() for ids in s.values()])


def _run_digest(cfg: ExperimentConfig, method: str, tmp_path: Path) -> str:
    from fedrisk.data.setting import build_setting
    from fedrisk.methods.registry import run_method

    outcome = run_method(method, cfg, build_setting(cfg, 0), 0, tmp_path)
    # what the run did: its scores, how long it trained, what it sent, what privacy it spent
    return _digest(
        outcome.cost.get("epsilon"),
        outcome.cost.get("bytes_sent"),
        len(outcome.history),
        *[np.round(s.p, 6) for _, s in sorted(outcome.scores.items())],
    )


def _probe(key: str, value: Any | None, tmp_path: Path) -> str:
    kind = PROBES[key][0]
    cfg = _config(key, value)
    if kind == "world":
        return _world_digest(cfg)
    if kind == "split":
        return _split_digest(cfg)
    if kind.startswith(("run:", "hrun:")):
        return _run_digest(cfg, kind.split(":")[1], tmp_path / re.sub(r"\W", "_", str(value)))
    raise AssertionError(kind)


def _changes(key: str, tmp_path: Path) -> None:
    value = PROBES[key][1]
    assert _probe(key, None, tmp_path) != _probe(key, value, tmp_path), f"{key} = {value!r} changed nothing"


@pytest.mark.parametrize("key", sorted(k for k, p in PROBES.items() if p[0] in ("world", "split")))
def test_world_and_split_keys_change_the_data(key, tmp_path):
    _changes(key, tmp_path)


FAST_RUNS = {
    "model.kind",
    "model.hidden",
    "model.n_trees",
    "training.lr",
    "federation.vertical.embedding_dim",
}


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(k, marks=() if k in FAST_RUNS else pytest.mark.slow)
        for k, p in sorted(PROBES.items())
        if p[0].startswith(("run:", "hrun:"))
    ],
)
def test_model_training_and_federation_keys_change_the_scores(key, tmp_path):
    _changes(key, tmp_path)


@pytest.mark.parametrize("key", sorted(k for k, p in PROBES.items() if p[0] == "summary"))
def test_evaluation_keys_change_the_summary(key):
    from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey
    from fedrisk.evaluation.summary import summarize_point
    from fedrisk.runner.units import Unit

    rng = np.random.default_rng(0)
    units = []
    for seed in range(3):
        y = (rng.random(600) < 0.1).astype(np.int8)
        ids = np.arange(600).astype(str)
        outcomes = {
            m: MethodOutcome(
                m, {ScoreKey("bank", "test"): ScoredSet(ids, y, np.clip(y * s + rng.random(600), 0, 2) / 2)}
            )
            for m, s in (("siloed", 0.2), ("centralized", 0.5), ("federated", 0.4))
        }
        units.append(Unit("base", {}, seed, outcomes))

    def summary(cfg: ExperimentConfig) -> str:
        e = cfg.evaluation
        return repr(
            summarize_point(
                units, ("siloed", "centralized", "federated"), e.n_bootstrap, e.ci_level, e.approval_rate
            )
        )

    base, changed = summary(_config(key, None)), summary(_config(key, PROBES[key][1]))
    assert base != changed


def test_topology_that_does_not_fit_the_data_is_rejected():
    from fedrisk.data.setting import build_setting

    cfg = _config("topology", "horizontal")  # one bank: nothing to federate horizontally
    with pytest.raises(FedriskError, match="topology"):
        build_setting(cfg, 0)


def test_num_threads_reaches_torch(tmp_path):
    import torch

    from fedrisk.runner.loop import run_unit

    cfg = validate(_merge(SMALL, {"training": {"num_threads": 2}}))
    before = torch.get_num_threads()
    try:
        run_unit(cfg, "base", 0, tmp_path, ("siloed",))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_two_workers_use_a_process_pool_and_agree(tmp_path, monkeypatch):
    from fedrisk.experiment import run_experiment
    from fedrisk.runner import processes

    pools = []
    real = processes.ProcessPoolExecutor

    def counting(*args, **kwargs):
        pools.append(kwargs.get("max_workers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(processes, "ProcessPoolExecutor", counting)
    results = {}
    for workers in (1, 2):
        data = _merge(
            SMALL, {"seeds": [0, 1], "runner": {"workers": workers}, "evaluation": {"n_bootstrap": 0}}
        )
        cfg = validate(data)
        results[workers] = run_experiment(cfg, data, tmp_path / str(workers), methods=("siloed",))
    assert pools == [2]
    assert results[1]["methods"]["siloed"]["ks"]["mean"] == results[2]["methods"]["siloed"]["ks"]["mean"]
