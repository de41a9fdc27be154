"""Robustness of horizontal federation: banks that drop out, and one bank that poisons its updates.

Why: a consortium of banks has to know what a single compromised or careless member can do to the shared
scorecard, and which Flower aggregation rule limits the damage. The audit reruns the federation (the same
`run_horizontal` the runner uses, the same world, split and seed) with:

- **poisoning**: the largest ``poisoned_banks`` banks (largest = most weight under FedAvg, the worst case)
  either poison their model updates through a Flower client mod (`fedrisk.federation.attacks`:
  ``sign_flip`` sends ``w_global − scale·Δ``, ``scale`` sends ``w_global + scale·Δ``) or train on flipped
  labels (``label_flip``). Each strategy (FedAvg and Flower's robust rules FedMedian, FedTrimmedAvg, Krum,
  MultiKrum) is run clean and attacked; the KS is measured on the honest banks' held-out applicants only.
  The robust rules need every bank's update in the clear, so every strategy here runs without SecAgg+ and
  DP (like for like): robustness and secure aggregation do not compose in Flower.
- **dropout**: each round only ``1 − dropout_fraction`` of the banks train (Flower samples them; the rest
  are absent that round). Each bank logs the rounds it trained in (`ParticipationLogMod`), so the audit
  reports which banks and how many training rows each round lost, and the KS cost against full
  participation. With ``dropout_secagg`` the same dropout is rerun under SecAgg+: it survives while at
  least 3 banks (and ``num_shares``) remain per round, and fails with a clear message below that.

Not simulated: a bank that vanishes *after* being sampled (mid-round). fedrisk's `RecordingGrid` stops
the run on any client failure by design (a silent partial aggregate could finish with exit 0), so such a
run ends with `ClientFailure` naming the bank; see docs/audits_robustness_fairness.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from fedrisk.config.audit import Attack, RobustnessConfig
from fedrisk.config.horizontal import MEAN_BASED, HorizontalConfig
from fedrisk.core.errors import FedriskError
from fedrisk.data.outcome import ScoreKey

# The experiment config composes `RobustnessConfig`, so this module is imported by every `fedrisk run`:
# torch, Flower's client side and scikit-learn are imported only when the audit runs.
if TYPE_CHECKING:  # the runner imports the audits, not the other way round
    from flwr.clientapp.typing import Mod

    from fedrisk.config.experiment import ExperimentConfig
    from fedrisk.data.setting import Setting
    from fedrisk.data.table import PartyTable
    from fedrisk.federation.horizontal import HorizontalOutcome

# ---------------------------------------------------------------------------------------------------------


def _train_rows(setting: Setting, bank: str) -> int:
    return len(setting.splits[bank]["train"])


def choose_poisoned(setting: Setting, k: int) -> list[str]:
    """The ``k`` largest banks by training rows (ties by name): FedAvg weighs them most."""
    banks = sorted(setting.label_holders, key=lambda b: (-_train_rows(setting, b), b))
    return sorted(banks[:k])


def strategy_config(
    base: HorizontalConfig,
    name: str,
    n_banks: int,
    n_poisoned: int,
    rounds: int,
    overrides: Mapping[str, Any],
    keep: str | None = None,
) -> HorizontalConfig:
    """The base section with ``name``'s strategy, in the clear (no SecAgg+/DP) and full participation.

    Defaults tell each robust rule how many attackers to expect: Krum's ``num_malicious_nodes``;
    MultiKrum keeps the ``n − f`` best-scored updates; FedTrimmedAvg cuts at least ``f`` from each end.
    """
    strategy, params = name, {}
    if name in ("krum", "multikrum", "bulyan"):
        params["num_malicious_nodes"] = n_poisoned
    if name == "multikrum":
        params["num_nodes_to_select"] = max(1, n_banks - n_poisoned)
    if name == "fedtrimmedavg":
        # Flower cuts int(beta * n) updates from each end: at least the attackers, at most just under half
        params["beta"] = min(0.49, max(0.2, (n_poisoned + 0.5) / n_banks))
    params.update(overrides)
    data = base.model_dump()
    data.update(
        strategy=strategy,
        strategy_params=params,
        rounds=rounds,
        keep=keep or base.keep,
        fraction_fit=1.0,
        secagg={"enabled": False},
        dp={"mode": "none"},
    )
    try:
        return HorizontalConfig.model_validate(data)
    except ValidationError as exc:
        raise FedriskError(
            f"audit.robustness.strategy_params.{name}",
            f"invalid ({exc.errors()[0]['msg']})",
            "fix the strategy's parameters",
        ) from None


def honest_metrics(outcome: HorizontalOutcome, banks: Sequence[str], approval_rate: float) -> dict[str, Any]:
    """KS (directional, the framework's one) and AUC, averaged over ``banks``' test sets."""
    from fedrisk.core.metrics import credit_metrics

    sets = {b: outcome.scores[ScoreKey(b, "test")] for b in banks}
    per_bank = {b: credit_metrics(s.y, s.p, approval_rate) for b, s in sets.items()}
    return {
        "ks": float(np.nanmean([m["ks"] for m in per_bank.values()])),
        "auc": float(np.nanmean([m["auc"] for m in per_bank.values()])),
        "ks_by_bank": {b: m["ks"] for b, m in per_bank.items()},
        "kept_round": outcome.extra.get("kept_round"),
    }


def _run(
    config: ExperimentConfig,
    setting: Setting,
    banks: Mapping[str, PartyTable],
    hcfg: HorizontalConfig,
    seed: int,
    workdir: Path,
    mods: Sequence[Mod] = (),
) -> HorizontalOutcome:
    from fedrisk.federation.horizontal import run_horizontal

    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    # Every audit run trains its full `rounds` (the audit's own key): no early stopping, which would
    # react to the attack itself, so clean and attacked runs differ by the attack alone.
    passes = hcfg.rounds * hcfg.local_epochs
    training = config.training.model_copy(
        update={"patience": 0, "epochs": max(config.training.epochs, passes)}
    )
    return run_horizontal(
        banks,
        setting.splits,
        config.model.kind,
        training,
        hcfg,
        config.federation.backend,
        workdir,
        seed,
        hidden=tuple(config.model.hidden),
        dropout=config.model.dropout,
        client_mods=mods,
    )


def _attacked_banks(setting: Setting, poisoned: Sequence[str], attack: Attack) -> dict[str, PartyTable]:
    from fedrisk.federation.attacks import flip_labels

    banks = {name: setting.parties[name] for name in setting.label_holders}
    if attack == "label_flip":
        for name in poisoned:
            own = np.concatenate([setting.splits[name]["train"], setting.splits[name]["val"]])
            banks[name] = flip_labels(banks[name], own)
    return banks


def _failure(exc: BaseException) -> dict[str, str]:
    return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}


def robustness_audit(
    config: ExperimentConfig, setting: Setting, seed: int, cfg: RobustnessConfig, workdir: Path
) -> dict:
    """Clean vs attacked KS per strategy, and what a dropout costs; JSON-serialisable.

    Returns
    -------
    dict
        ``strategies[name] = {"clean": {ks, auc, ...}, "attacked": {...}, "ks_gap", "within_goal",
        "ks_gap_vs_clean_fedavg", "params"}``, ``robust_within_goal`` (strategies meeting the goal),
        ``fedavg_ks_loss``, and ``dropout`` (participants per round, rows lost, KS cost, SecAgg+ survival).
        ``{"enabled": False}`` when off; ``skipped`` with a reason for a vertical setting.
    """
    if not cfg.enabled:
        return {"enabled": False}
    from fedrisk.federation.attacks import UpdatePoisoningMod
    from fedrisk.federation.channel import ClientFailure

    if setting.topology != "horizontal":
        return {"enabled": True, "skipped": "robustness audit needs horizontal federation (several banks)"}
    workdir = Path(workdir)
    names = list(setting.label_holders)
    n = len(names)
    f = cfg.poisoned_banks
    if 2 * f >= n:
        raise FedriskError(
            "audit.robustness.poisoned_banks",
            f"{f} attackers among {n} banks: no aggregation rule survives a half or more",
            f"use at most {(n - 1) // 2}",
        )
    base = config.federation.horizontal
    rounds = cfg.rounds or base.rounds
    approval = config.evaluation.approval_rate
    poisoned = choose_poisoned(setting, f)
    honest = [b for b in names if b not in poisoned]
    clean_banks = {name: setting.parties[name] for name in names}
    attacked_banks = _attacked_banks(setting, poisoned, cfg.attack)
    attack_mods: list[Mod] = []
    if f and cfg.attack in ("sign_flip", "scale"):
        attack_mods.append(UpdatePoisoningMod(frozenset(poisoned), cfg.attack, cfg.scale))  # type: ignore[arg-type]

    results: dict[str, dict] = {}
    for name in cfg.strategies:
        hcfg = strategy_config(base, name, n, f, rounds, cfg.strategy_params.get(name, {}), cfg.keep)
        entry: dict[str, Any] = {"strategy": hcfg.strategy, "params": dict(hcfg.strategy_params)}
        if n < hcfg.min_clients():
            entry["skipped"] = f"needs at least {hcfg.min_clients()} banks, the world has {n}"
            results[name] = entry
            continue
        runs = [("clean", clean_banks, [])]
        if f:
            runs.append(("attacked", attacked_banks, attack_mods))
        for label, banks, mods in runs:
            try:
                outcome = _run(config, setting, banks, hcfg, seed, workdir / f"{name}-{label}", mods)
                entry[label] = honest_metrics(outcome, honest, approval)
            except (ClientFailure, FedriskError) as exc:
                entry[label] = _failure(exc)
            finally:
                shutil.rmtree(workdir / f"{name}-{label}", ignore_errors=True)
        if "ks" in entry.get("attacked", {}) and "ks" in entry.get("clean", {}):
            entry["ks_gap"] = entry["attacked"]["ks"] - entry["clean"]["ks"]
            entry["within_goal"] = bool(entry["ks_gap"] >= -cfg.max_ks_drop)
        results[name] = entry

    clean_fedavg = results.get("fedavg", {}).get("clean", {}).get("ks")
    if clean_fedavg is not None:
        for entry in results.values():
            if "ks" in entry.get("attacked", {}):
                entry["ks_gap_vs_clean_fedavg"] = entry["attacked"]["ks"] - clean_fedavg
    robust = [s for s in results if s != "fedavg" and results[s].get("within_goal")]
    out: dict[str, Any] = {
        "enabled": True,
        "seed": seed,
        "banks": names,
        "poisoned": poisoned,
        "honest": honest,
        "attack": cfg.attack if f else None,
        "scale": cfg.scale if f and cfg.attack != "label_flip" else None,
        "rounds": rounds,
        "keep": cfg.keep or base.keep,
        "max_ks_drop": cfg.max_ks_drop,
        "note": "every strategy runs without SecAgg+/DP (robust rules need updates in the clear) and for all "
        "its rounds (no early stopping); KS is the mean over the honest banks' test applicants",
        "strategies": results,
        "robust_within_goal": robust,
        "fedavg_ks_loss": -results["fedavg"]["ks_gap"] if "ks_gap" in results.get("fedavg", {}) else None,
    }
    if cfg.dropout_fraction > 0:
        out["dropout"] = dropout_audit(config, setting, seed, cfg, workdir / "dropout", rounds)
    return out


# ---------------------------------------------------------------------------------------------------------
# Dropout


def _participation(setting: Setting, rounds: int, run_dir: Path) -> dict[str, Any]:
    from fedrisk.federation.attacks import read_participation
    from fedrisk.federation.horizontal import PARTIES_DIR

    names = list(setting.label_holders)
    trained = {b: set(read_participation(run_dir / PARTIES_DIR / b)) for b in names}
    rows = {b: _train_rows(setting, b) for b in names}
    total = sum(rows.values())
    per_round = []
    for r in range(1, rounds + 1):
        present = sorted(b for b in names if r in trained[b])
        absent = sorted(set(names) - set(present))
        per_round.append(
            {
                "round": r,
                "trained": present,
                "absent": absent,
                "rows_lost": sum(rows[b] for b in absent) / total,
            }
        )
    return {
        "per_round": per_round,
        "rounds_missed": {b: rounds - len(trained[b] & set(range(1, rounds + 1))) for b in names},
        "never_trained": sorted(b for b in names if not trained[b]),
        "mean_banks_per_round": float(np.mean([len(r["trained"]) for r in per_round])),
        "mean_rows_lost": float(np.mean([r["rows_lost"] for r in per_round])),
    }


def dropout_audit(
    config: ExperimentConfig, setting: Setting, seed: int, cfg: RobustnessConfig, workdir: Path, rounds: int
) -> dict[str, Any]:
    """Full participation vs ``dropout_fraction`` of banks absent per round (and the same under SecAgg+)."""
    base = config.federation.horizontal
    names = list(setting.label_holders)
    banks = {name: setting.parties[name] for name in names}
    approval = config.evaluation.approval_rate
    fraction_fit = 1.0 - cfg.dropout_fraction
    from fedrisk.federation.attacks import ParticipationLogMod
    from fedrisk.federation.channel import ClientFailure

    log_mod: list[Mod] = [ParticipationLogMod()]

    def variant(**changes: Any) -> HorizontalConfig:
        data = base.model_dump()
        data.update(rounds=rounds, keep=cfg.keep or base.keep, **changes)
        return HorizontalConfig.model_validate(data)

    out: dict[str, Any] = {
        "fraction": cfg.dropout_fraction,
        "fraction_fit": fraction_fit,
        "strategy": base.strategy,
        "secagg": base.secagg.enabled,
        "dp": base.dp.mode if base.dp.active else "none",
    }
    try:
        full = _run(config, setting, banks, variant(fraction_fit=1.0), seed, workdir / "full")
        out["full"] = honest_metrics(full, names, approval)
    except (ClientFailure, FedriskError) as exc:
        out["full"] = _failure(exc)
    finally:
        shutil.rmtree(workdir / "full", ignore_errors=True)

    def dropped_run(label: str, hcfg: HorizontalConfig) -> dict[str, Any]:
        run_dir = workdir / label
        try:
            outcome = _run(config, setting, banks, hcfg, seed, run_dir, log_mod)
            result = {"survived": True, **honest_metrics(outcome, names, approval)}
            result.update(_participation(setting, rounds, run_dir))
            if "ks" in out["full"]:
                result["ks_gap"] = result["ks"] - out["full"]["ks"]
            return result
        except (ClientFailure, FedriskError) as exc:
            return {"survived": False, **_failure(exc)}
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    out["dropped"] = dropped_run("dropped", variant(fraction_fit=fraction_fit))
    if cfg.dropout_secagg and not base.secagg.enabled and base.strategy in MEAN_BASED:
        secagg = base.secagg.model_copy(update={"enabled": True})
        need = max(3, secagg.num_shares) if isinstance(secagg.num_shares, int) else 3
        out["dropped_secagg"] = {
            "min_banks_per_round": need,
            **dropped_run("dropped-secagg", variant(fraction_fit=fraction_fit, secagg=secagg.model_dump())),
        }
    return out
