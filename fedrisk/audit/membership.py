"""Membership inference: can an attacker tell whether a firm was in a model's training set?

The attack is the likelihood-ratio attack (LiRA) of

    N. Carlini, S. Chien, M. Nasr, S. Song, A. Terzis, F. Tramèr. "Membership Inference Attacks From First
    Principles". IEEE S&P 2022 (arXiv:2112.03570).

LiRA itself is `fedrisk.audit.lira`; the per-method retraining is `fedrisk.audit.membership_recipes`. The
set-up follows the paper's evaluation:

1. The attacker can sample from a *population* of applicants (here: the label holders' training and test
   applicants, ``n_population`` of them at random). ``n_shadow + 1`` models are trained the way the method
   trains its model, each on a random half of the population; every model in turn among the first
   ``n_targets`` is the *target* and the other ``n_shadow`` its shadows (Carlini et al. evaluate on
   several targets the same way), so every example has IN and OUT shadows.
2. The statistic is the logit-scaled confidence on the true label, ``log(p_y / (1 - p_y))``, which for a
   binary model is the signed logit ``(2y - 1) * z``: close to Gaussian over training runs.
3. Per example, Gaussians are fitted to the IN and the OUT shadows' statistics (with few shadows, one
   pooled variance, as the paper advises). The *offline* score (OUT shadows only) is the one-sided test
   of the target's statistic against OUT (its z-score); the *online* score is the log likelihood ratio
   under IN vs OUT. The headline ``lira`` is offline: with 8-16 shadows the per-example IN means are
   too noisy for the online test to win (it scored 0.02-0.05 AUC lower here); ``lira_online`` is
   reported beside it. The loss-threshold attack (Yeom et al., CSF 2018) is the baseline an attacker
   without shadows gets.

Results are TPR at low FPR (0.1%, 1%: the paper's point is that average-case AUC hides the examples an
attacker is sure about), ROC AUC and the membership advantage max(TPR - FPR) (Yeom et al.).

What is attacked, per method (retrained the way `fedrisk.methods.baselines` and the federated drivers train):

* ``siloed``: the label holder's own model on its own columns (horizontal: each bank's own model, every
  firm scored by its bank's model);
* ``federated``: vertical: the split model trained by its pooled twin (`fedrisk.models.split_trainer.fit_twin`),
  which the Flower run reproduces to float rounding (`tests/federation/test_vertical.py`): a stand-in
  that costs no PSI or messaging per shadow; horizontal: the real Flower run
  (`fedrisk.federation.horizontal.run_horizontal`, in-process), once per shadow;
* ``centralized``: horizontal: every bank's rows pooled (`centralized_horizontal`); vertical: the same
  twin, as in the runner, so it is attacked once and reported with ``same_model_as``.

With DP (``dp.enabled``): every model is retrained with DP-SGD (Abadi et al., CCS 2016, with Opacus:
per-example gradients clipped to ``max_grad_norm``, Gaussian noise, Poisson sampling, ε from Opacus's RDP
accountant; `fedrisk.audit.dp_sgd`), its encoder fitted on the label holder's
validation rows rather than on the members (DP-SGD does not cover the members' medians, scales and
one-hot levels). The horizontal federated model instead uses the run's own client-level DP (Flower's
wrappers: the ``[federation.horizontal.dp]`` section if active, else ``server-fixed`` at this section's
noise or target ε); client-level DP implies the same (ε, δ) per firm, since one firm changes one bank's
data. (That run's encoder comes from its statistics round, which the DP wrappers do not noise.)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from fedrisk.audit.dp_sgd import dp_sgd_train
from fedrisk.audit.lira import attack_metrics, confidence, lira_scores
from fedrisk.audit.membership_recipes import DenseSplit, Recipe, recipe_for, sample_population
from fedrisk.config.audit import DPSGDConfig, MembershipConfig
from fedrisk.core.metrics import ks_statistic

if TYPE_CHECKING:  # the runner and the config compose this module; importing them here would be circular
    from fedrisk.config.experiment import ExperimentConfig
    from fedrisk.data.setting import Setting

__all__ = [
    "DPSGDConfig",
    "DenseSplit",
    "MembershipConfig",
    "attack_metrics",
    "dp_sgd_train",
    "lira_scores",
    "membership_audit",
]

# ---------------------------------------------------------------------------------------------------------
# The audit


def model_seed(seed: int, k: int) -> int:
    """Training seed of model ``k``: model 0 uses the unit's own seed (the method's model, retrained)."""
    return seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0] % 2**31)


def _attack(
    recipe: Recipe, keep: np.ndarray, y: np.ndarray, seed: int, dp: DPSGDConfig | None, cfg: MembershipConfig
) -> dict:
    started = time.perf_counter()
    fitted = [recipe(keep[k], model_seed(seed, k), dp) for k in range(len(keep))]
    conf = np.stack([confidence(y, f.logits) for f in fitted])
    pooled: dict[str, list[np.ndarray]] = {"offline": [], "online": [], "loss": []}
    members, utility = [], []
    for t in range(cfg.n_targets):
        for name, score in lira_scores(conf, keep, t, cfg.fix_variance).items():
            pooled[name].append(score)
        members.append(keep[t])
        out = ~keep[t]
        utility.append(
            (
                float(roc_auc_score(y[keep[t]], fitted[t].logits[keep[t]])),
                float(roc_auc_score(y[out], fitted[t].logits[out])),
                ks_statistic(y[out], fitted[t].logits[out]),
            )
        )
    is_member = np.concatenate(members)
    label = np.concatenate([y] * cfg.n_targets)
    offline = np.concatenate(pooled["offline"])
    result = {
        "lira": attack_metrics(is_member, offline, cfg.target_fpr),
        "lira_online": attack_metrics(is_member, np.concatenate(pooled["online"]), cfg.target_fpr),
        "loss_attack": attack_metrics(is_member, np.concatenate(pooled["loss"]), cfg.target_fpr),
        "lira_auc_by_label": {
            name: float(roc_auc_score(is_member[label == value], offline[label == value]))
            for name, value in (("default", 1), ("non_default", 0))
            if 0 < is_member[label == value].sum() < (label == value).sum()
        },
        "model_auc_members": float(np.mean([u[0] for u in utility])),
        "model_auc_nonmembers": float(np.mean([u[1] for u in utility])),
        "model_ks_nonmembers": float(np.mean([u[2] for u in utility])),
        "seconds": time.perf_counter() - started,
    }
    privacy_spent = [f.privacy for f in fitted[: cfg.n_targets] if f.privacy]
    if privacy_spent:
        result["privacy"] = max(privacy_spent, key=lambda s: s.get("epsilon") or 0.0)
    return result


def membership_audit(config: ExperimentConfig, setting: Setting, seed: int, cfg: MembershipConfig) -> dict:
    """LiRA against each method's model, without and (if ``cfg.dp.enabled``) with DP.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment (model family, training, federation settings).
    setting : Setting
        The unit's parties, topology and the label holders' splits.
    seed : int
        The unit's seed: population sample, member halves, every model's training seed.
    cfg : MembershipConfig

    Returns
    -------
    dict
        JSON-serialisable: the set-up (``population``, ``members_per_model``, ``n_shadow``, ``n_targets``,
        ``fpr_resolution``: one false positive among the pooled non-members) and ``results``: one entry per
        (method, dp) with ``lira`` (offline), ``lira_online`` and ``loss_attack`` metrics (``auc``,
        ``tpr_at_fpr``, ``advantage``), the target models' AUC on members and non-members and KS on
        non-members (what DP costs), ``privacy`` (ε, δ, how) under DP, and ``seconds``; an entry whose
        model another entry already attacked (vertical centralized = federated) copies its figures and
        names it in ``same_model_as``.
    """
    torch.set_num_threads(config.training.num_threads)
    pop = sample_population(setting, cfg.n_population, seed)
    n = len(pop.ids)
    rng = np.random.default_rng([seed, 11])
    keep = np.stack([rng.permutation(n) < n // 2 for _ in range(cfg.n_shadow + 1)])
    dp_cfg = cfg.dp if cfg.dp.enabled else None
    vertical = setting.topology == "vertical"
    results = []
    done: dict[tuple[str, bool], tuple[str, dict]] = {}
    for method in cfg.methods:
        # vertical centralized and federated are one model (the runner's centralized is the twin): attack once
        model = "twin" if vertical and method in ("centralized", "federated") else method
        recipe = recipe_for(method, config, setting, pop, cfg.dp)
        variants: list[DPSGDConfig | None] = [None] + ([dp_cfg] if dp_cfg else [])
        for dp in variants:
            entry: dict = {"method": method, "dp": dp is not None}
            if dp is not None:
                flower = method == "federated" and not vertical
                entry["dp_kind"] = "client-level, Flower" if flower else "example-level, DP-SGD"
            key = (model, dp is not None)
            if key in done:
                entry.update({**done[key][1], "same_model_as": done[key][0]})
            else:
                attack = _attack(recipe, keep, pop.y, seed, dp, cfg)
                done[key] = (method, attack)
                entry.update(attack)
            results.append(entry)
    return {
        "attack": "LiRA (Carlini et al. 2022), online and offline; loss threshold (Yeom et al. 2018) as baseline",
        "topology": setting.topology,
        "population": n,
        "base_rate": float(pop.y.mean()),
        "members_per_model": n // 2,
        "n_shadow": cfg.n_shadow,
        "n_targets": cfg.n_targets,
        "fix_variance": cfg.fix_variance,
        "fpr_resolution": 1.0 / (cfg.n_targets * (n - n // 2)),
        "federated_stand_in": (
            "pooled twin (fedrisk.models.split_trainer.fit_twin)"
            if setting.topology == "vertical"
            else "Flower run, in-process"
        ),
        "results": results,
    }
