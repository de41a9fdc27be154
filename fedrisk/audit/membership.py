"""Membership inference: can an attacker tell whether a firm was in a model's training set?

The attack is the likelihood-ratio attack (LiRA) of

    N. Carlini, S. Chien, M. Nasr, S. Song, A. Terzis, F. Tramèr. "Membership Inference Attacks From First
    Principles". IEEE S&P 2022 (arXiv:2112.03570).

No maintained library runs LiRA on torch tabular models (the authors' code is a research script for JAX
image models), and it is short, so it is written here. The set-up follows the paper's evaluation:

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

With DP (``dp.enabled``): every model is retrained with DP-SGD (Abadi et al., CCS 2016: per-example
gradients via ``torch.func``, clipped to ``max_grad_norm``, Gaussian noise, Poisson sampling; ε from
dp_accounting's RDP accountant, `fedrisk.federation.privacy`), its encoder fitted on the label holder's
validation rows rather than on the members (DP-SGD does not cover the members' medians, scales and
one-hot levels). The horizontal federated model instead uses the run's own client-level DP (Flower's
wrappers: the ``[federation.horizontal.dp]`` section if active, else ``server-fixed`` at this section's
noise or target ε); client-level DP implies the same (ε, δ) per firm, since one firm changes one bank's
data. (That run's encoder comes from its statistics round, which the DP wrappers do not noise.)
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn
from torch.func import functional_call, grad, vmap

from fedrisk.config.audit import DPSGDConfig, MembershipConfig, Method
from fedrisk.config.model import TrainConfig
from fedrisk.core.metrics import ks_statistic
from fedrisk.data.outcome import ScoreKey
from fedrisk.data.preprocessing import HolderPreprocessor
from fedrisk.data.table import PartyTable
from fedrisk.federation import privacy
from fedrisk.models import make_model, train
from fedrisk.models.split import SplitModel, make_split_model, predict_twin_logits
from fedrisk.models.split_data import VerticalBlocks, vertical_blocks
from fedrisk.models.split_trainer import fit_twin
from fedrisk.models.training import bce, make_optimizer, predict_logits, seed_torch

if TYPE_CHECKING:  # the runner and the config compose this module; importing them here would be circular
    from fedrisk.config.experiment import ExperimentConfig
    from fedrisk.data.setting import Setting

__all__ = [
    "DPSGDConfig",
    "MembershipConfig",
    "attack_metrics",
    "dp_sgd_train",
    "lira_scores",
    "membership_audit",
]

# ---------------------------------------------------------------------------------------------------------
# LiRA and the attack metrics


def lira_scores(
    conf: np.ndarray, keep: np.ndarray, target: int, fix_variance: bool = True
) -> dict[str, np.ndarray]:
    """Membership scores for model ``target``'s examples, its shadows being every other model.

    Parameters
    ----------
    conf : np.ndarray
        ``(n_models, n)`` logit-scaled confidence of each model on each population example.
    keep : np.ndarray
        ``(n_models, n)`` bool: example ``i`` was in model ``k``'s training set.
    target : int
        Row of ``conf`` attacked.
    fix_variance : bool
        Share one variance (pooled within-example) across examples instead of one per example.

    Returns
    -------
    dict
        ``online`` (log N(c; IN) - log N(c; OUT)), ``offline`` ((c - mu_out) / sd_out) and ``loss`` (c):
        higher = more likely a member.
    """
    shadows = np.arange(len(conf)) != target
    c, k = conf[shadows], keep[shadows]
    observed = conf[target]

    def fit(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = mask.sum(0)
        values = np.where(mask, c, 0.0)
        fallback = c[mask].mean()  # examples with no shadow on this side: the population-wide mean
        mean = np.where(count > 0, values.sum(0) / np.maximum(count, 1), fallback)
        resid = np.where(mask, c - mean, 0.0) ** 2
        pooled = math.sqrt(resid.sum() / max(mask.sum() - (count > 0).sum(), 1))
        if fix_variance:
            return mean, np.full_like(mean, pooled)
        per_example = np.sqrt(resid.sum(0) / np.maximum(count - 1, 1))
        return mean, np.where(count > 1, np.maximum(per_example, 1e-6), pooled)

    mu_in, sd_in = fit(k)
    mu_out, sd_out = fit(~k)
    return {
        "online": norm.logpdf(observed, mu_in, sd_in) - norm.logpdf(observed, mu_out, sd_out),
        "offline": (observed - mu_out) / sd_out,
        "loss": observed.copy(),
    }


def attack_metrics(is_member: np.ndarray, score: np.ndarray, target_fpr: Sequence[float]) -> dict:
    """ROC AUC, TPR at each target FPR (the largest TPR with FPR <= target) and max(TPR - FPR)."""
    fpr, tpr, _ = roc_curve(is_member, score)
    return {
        "auc": float(roc_auc_score(is_member, score)),
        "tpr_at_fpr": {f"{f:g}": float(tpr[fpr <= f].max()) for f in target_fpr},
        "advantage": float(np.max(tpr - fpr)),
    }


def confidence(y: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Logit-scaled confidence on the true label: ``log(p_y / (1 - p_y)) = (2y - 1) * logit``."""
    return (2.0 * y.astype(np.float64) - 1.0) * logits.astype(np.float64)


# ---------------------------------------------------------------------------------------------------------
# DP-SGD (Abadi et al. 2016) for any module whose forward takes row-aligned tensors


def _quiet(fn: Callable[..., float], *args: float) -> float:
    """Call the accountant with absl's warnings muted (dp_accounting logs every fractional RDP order it skips)."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        return fn(*args)
    finally:
        absl.setLevel(level)


def dp_sgd_train(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    dp: DPSGDConfig,
    seed: int,
) -> dict:
    """Train ``module`` in place with DP-SGD; same Adam, epochs and early stopping as `fedrisk.models.train`.

    ``module(*[x[rows] for x in inputs])`` must give logits ``(len(rows),)``. Each step takes a Poisson
    sample of ``train_idx`` at rate ``batch_size / n``, clips every example's gradient to ``max_grad_norm``,
    adds N(0, (z * max_grad_norm)^2) to the sum and divides by the expected batch size; ``z`` is
    ``noise_multiplier``, or solved from ``target_epsilon`` for all ``epochs``.
    Early stopping reads the label holder's validation rows (not training data: post-processing).

    Returns
    -------
    dict
        ``epsilon`` (RDP accountant, Poisson-subsampled Gaussian, add/remove one example), ``delta``,
        ``steps``, ``sampling_rate``, ``noise_multiplier``.
    """
    torch.set_num_threads(cfg.num_threads)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(seed))
    n = len(train_idx)
    q = min(1.0, cfg.batch_size / n)
    steps_per_epoch = max(1, round(1 / q))
    yt = torch.from_numpy(y.astype(np.float32))
    params = dict(module.named_parameters())
    z = dp.noise_multiplier
    if dp.target_epsilon is not None:  # solved for every epoch: early stopping only spends less
        z = _quiet(privacy.noise_multiplier_for, dp.target_epsilon, cfg.epochs * steps_per_epoch, q, dp.delta)
    std = z * dp.max_grad_norm

    def loss_one(p: dict[str, torch.Tensor], *row: torch.Tensor) -> torch.Tensor:
        *xs, target = row
        logit = functional_call(module, p, tuple(x.unsqueeze(0) for x in xs))
        return F.binary_cross_entropy_with_logits(logit, target.unsqueeze(0))

    per_example = vmap(grad(loss_one), in_dims=(None,) + (0,) * (len(inputs) + 1), randomness="different")
    optimizer = make_optimizer(module, cfg)
    val_inputs = [x[torch.from_numpy(val_idx)] for x in inputs]
    best_loss, best_state, stale, steps = float("inf"), copy.deepcopy(module.state_dict()), 0, 0
    for _ in range(cfg.epochs):
        module.train()
        for _ in range(steps_per_epoch):
            batch = torch.from_numpy(train_idx[rng.random(n) < q])
            steps += 1
            optimizer.zero_grad()
            grads: dict[str, torch.Tensor] = {}
            if len(batch):
                detached = {k: v.detach() for k, v in params.items()}
                grads = per_example(detached, *(x[batch] for x in inputs), yt[batch])
                sq = sum(g.reshape(len(batch), -1).pow(2).sum(1) for g in grads.values())
                scale = (dp.max_grad_norm / (sq.sqrt() + 1e-12)).clamp(max=1.0)
            for name, p in params.items():
                total = torch.zeros_like(p)
                if grads:
                    g = grads[name]
                    total = (g * scale.view(-1, *([1] * (g.dim() - 1)))).sum(0)
                p.grad = (total + torch.normal(0.0, std, p.shape, generator=gen)) / (q * n)
            optimizer.step()
        module.eval()
        with torch.no_grad():
            val_loss = bce(y[val_idx], module(*val_inputs).numpy())
        if val_loss < best_loss - cfg.min_delta:
            best_loss, best_state, stale = val_loss, copy.deepcopy(module.state_dict()), 0
        else:
            stale += 1
            if cfg.patience and stale >= cfg.patience:
                break
    module.load_state_dict(best_state)
    return {
        "epsilon": _quiet(privacy.epsilon, z, steps, q, dp.delta),
        "delta": dp.delta,
        "steps": steps,
        "sampling_rate": q,
        "noise_multiplier": z,
    }


class DenseSplit(nn.Module):
    """A `SplitModel` on dense inputs: a partner's absent rows are zeros with mask 0.

    Per-example gradients (``vmap``) need fixed shapes, which the top's scatter of covered rows is not;
    ``m * bottom(x) + (1 - m) * missing`` is the same function (checked against the twin in the tests).
    Inputs: each holder's rows in embedding order, then each partner's 0/1 mask.
    """

    def __init__(self, model: SplitModel) -> None:
        super().__init__()
        self.model = model
        self.holders = list(model.top.holders)
        self.partners = [h for h in self.holders if h in model.top.missing]

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        top = self.model.top
        masks = dict(zip(self.partners, xs[len(self.holders) :], strict=True))
        parts = []
        for h, x in zip(self.holders, xs[: len(self.holders)], strict=True):
            z = self.model.bottoms[h](x)
            if h in masks:
                m = masks[h].unsqueeze(-1)
                z = m * z + (1.0 - m) * top.missing[h]
            parts.append(z)
        if top.head is None:
            return torch.stack([z[:, 0] for z in parts]).sum(0)
        return top.head(torch.cat(parts, dim=1)).squeeze(-1)

    def dense_inputs(self, data: VerticalBlocks, n: int) -> list[torch.Tensor]:
        """The dense tensors for all ``n`` applicants of ``data``."""
        xs, masks = [], []
        for h in self.holders:
            pos = data.coverage[h].pos
            dense = np.zeros((n, data.blocks[h].shape[1]), dtype=np.float32)
            dense[pos >= 0] = data.blocks[h][pos[pos >= 0]]
            xs.append(torch.from_numpy(dense))
            if h in self.partners:
                masks.append(torch.from_numpy((pos >= 0).astype(np.float32)))
        return xs + masks


# ---------------------------------------------------------------------------------------------------------
# The population and the per-method training recipes


@dataclass
class Population:
    """The attacker's population and the label holders' validation rows (never members).

    ``holder``/``ids``/``y`` per population example; ``val`` maps each label holder to its validation ids.
    """

    holder: np.ndarray
    ids: np.ndarray
    y: np.ndarray
    val: dict[str, np.ndarray]


def sample_population(setting: Setting, n: int, seed: int) -> Population:
    """``n`` of the label holders' train + test applicants at random (all of them if fewer)."""
    holders, ids, ys = [], [], []
    for name in setting.label_holders:
        table = setting.parties[name]
        split = setting.splits[name]
        own = np.concatenate([np.asarray(split[s]) for s in split if s != "val"])
        holders.append(np.full(len(own), name, dtype=object))
        ids.append(own)
        ys.append(table.label[pd.Index(table.ids).get_indexer(own)])
    holder, idv, y = np.concatenate(holders), np.concatenate(ids), np.concatenate(ys).astype(np.int8)
    rng = np.random.default_rng([seed, 5])
    pick = np.sort(rng.choice(len(idv), min(n, len(idv)), replace=False))
    val = {name: np.asarray(setting.splits[name]["val"]) for name in setting.label_holders}
    return Population(holder[pick].astype(str), idv[pick], y[pick], val)


@dataclass
class Fitted:
    """One trained model's logits on the population, and its privacy cost (None without DP)."""

    logits: np.ndarray
    privacy: dict | None = None


Recipe = Callable[[np.ndarray, int, DPSGDConfig | None], Fitted]
"""``(member mask over the population, seed, DP or None) -> Fitted``."""


def _rows(table: PartyTable, ids: np.ndarray) -> np.ndarray:
    return pd.Index(table.ids).get_indexer(ids)


def _fit_plain(
    X: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, config: ExperimentConfig,
    seed: int, dp: DPSGDConfig | None,
) -> tuple[np.ndarray, dict | None]:  # fmt: skip
    """A `fedrisk.models.make_model` model fitted like `fedrisk.methods.baselines` (or with DP-SGD); logits on ``X``."""
    seed_torch(seed)
    m = config.model
    model = make_model(m.kind, X.shape[1], m.hidden, m.dropout)
    if dp is None:
        train(model, X[train_idx], y[train_idx], X[val_idx], y[val_idx], config.training, seed=seed)
        spent = None
    else:
        spent = dp_sgd_train(model, [torch.from_numpy(X)], y, train_idx, val_idx, config.training, dp, seed)
    return predict_logits(model, X), spent


def _encoder_rows(train_idx: np.ndarray, val_idx: np.ndarray, dp: DPSGDConfig | None) -> np.ndarray:
    """Rows the label holder fits its preprocessing on: the training rows, as the baselines do; under DP
    its validation rows instead, since medians, scales and one-hot levels of the members are a release
    DP-SGD does not cover (it would leak membership around the noise)."""
    return train_idx if dp is None else val_idx


def _single_table_recipe(
    config: ExperimentConfig, table: PartyTable, pop_ids: np.ndarray, val_ids: np.ndarray
) -> Recipe:
    """One holder alone on its own columns, preprocessing fitted on its training rows (`siloed_vertical`)."""
    rows = _rows(table, np.concatenate([pop_ids, val_ids]))
    y = table.label[rows].astype(np.float32)
    n_pop = len(pop_ids)
    val_idx = np.arange(n_pop, len(rows))

    def fit(members: np.ndarray, seed: int, dp: DPSGDConfig | None) -> Fitted:
        train_idx = np.flatnonzero(members)
        prep = HolderPreprocessor().fit(table.features.iloc[rows[_encoder_rows(train_idx, val_idx, dp)]])
        X = prep.transform(table.features.iloc[rows])
        logits, spent = _fit_plain(X, y, train_idx, val_idx, config, seed, dp)
        return Fitted(logits[:n_pop], spent)

    return fit


def _per_holder_recipe(config: ExperimentConfig, setting: Setting, pop: Population) -> Recipe:
    """Horizontal siloed: each bank's own model, every firm scored by its own bank's (`siloed_horizontal`)."""
    parts = {}
    for name in setting.label_holders:
        where = np.flatnonzero(pop.holder == name)
        if len(where):
            parts[name] = (
                where,
                _single_table_recipe(config, setting.parties[name], pop.ids[where], pop.val[name]),
            )

    def fit(members: np.ndarray, seed: int, dp: DPSGDConfig | None) -> Fitted:
        logits = np.zeros(len(pop.ids), dtype=np.float32)
        spent: list[dict] = []
        for where, recipe in parts.values():
            fitted = recipe(members[where], seed, dp)
            logits[where] = fitted.logits
            if fitted.privacy:
                spent.append(fitted.privacy)
        worst = max(spent, key=lambda s: s["epsilon"]) if spent else None  # each bank's model its own release
        return Fitted(logits, worst)

    return fit


def _pooled_horizontal_recipe(config: ExperimentConfig, setting: Setting, pop: Population) -> Recipe:
    """Every bank's rows pooled, one preprocessing fitted on the training rows (`centralized_horizontal`)."""
    holders = np.concatenate([pop.holder, *[np.full(len(v), h) for h, v in pop.val.items()]])
    ids = np.concatenate([pop.ids, *pop.val.values()])  # the population, then each bank's validation rows
    frames, order = [], []
    y = np.empty(len(ids), dtype=np.float32)
    for name in setting.label_holders:
        table = setting.parties[name]
        where = np.flatnonzero(holders == name)
        pos = _rows(table, ids[where])
        frames.append(table.features.iloc[pos])
        y[where] = table.label[pos]
        order.append(where)
    features = pd.concat(frames, ignore_index=True)
    features = features.iloc[np.argsort(np.concatenate(order))].reset_index(drop=True)
    n_pop = len(pop.ids)
    val_idx = np.arange(n_pop, len(ids))

    def fit(members: np.ndarray, seed: int, dp: DPSGDConfig | None) -> Fitted:
        train_idx = np.flatnonzero(members)
        prep = HolderPreprocessor().fit(features.iloc[_encoder_rows(train_idx, val_idx, dp)])
        X = prep.transform(features)
        logits, spent = _fit_plain(X, y, train_idx, val_idx, config, seed, dp)
        return Fitted(logits[:n_pop], spent)

    return fit


def _twin_recipe(config: ExperimentConfig, setting: Setting, pop: Population) -> Recipe:
    """Vertical federated: the split model trained by its pooled twin (the Flower run's exact stand-in)."""
    holder = setting.label_holders[0]
    parties = setting.parties
    applicants = np.concatenate([pop.ids, pop.val[holder]])
    bank = parties[holder]
    labels = bank.label[_rows(bank, applicants)].astype(np.int8)
    n_pop = len(pop.ids)
    val_idx = np.arange(n_pop, len(applicants))
    partner_preps = {h: HolderPreprocessor().fit(t.features) for h, t in parties.items() if h != holder}
    vcfg, train_cfg, kind = config.federation.vertical, config.training, config.model.kind

    def fit(members: np.ndarray, seed: int, dp: DPSGDConfig | None) -> Fitted:
        train_idx = np.flatnonzero(members)
        fit_ids = applicants[_encoder_rows(train_idx, val_idx, dp)]
        data = vertical_blocks(parties, holder, applicants, fit_ids, partner_preps)
        model = make_split_model(
            kind,
            data.n_features,
            holder,
            seed,
            vcfg.embedding_dim,
            vcfg.bottom_hidden,
            vcfg.top_hidden,
            vcfg.dropout,
        )
        coverage = {h: data.coverage[h] for h in model.top.holders}
        spent = None
        if dp is None:
            step = vcfg.step_size(train_cfg.batch_size, len(train_idx))
            fit_twin(model, data.blocks, coverage, labels, train_idx, val_idx, train_cfg, step, seed)
        else:
            dense = DenseSplit(model)
            inputs = dense.dense_inputs(data, len(applicants))
            spent = dp_sgd_train(dense, inputs, labels, train_idx, val_idx, train_cfg, dp, seed)
        X = {h: torch.from_numpy(b) for h, b in data.blocks.items()}
        return Fitted(predict_twin_logits(model, X, coverage, np.arange(n_pop)), spent)

    return fit


def _flower_recipe(
    config: ExperimentConfig, setting: Setting, pop: Population, dp_cfg: DPSGDConfig
) -> Recipe:
    """Horizontal federated: the configured Flower run (in-process), on each bank's member rows.

    With DP: the run's own client-level DP section if active, else Flower's server-side fixed clipping
    at ``dp_cfg``'s noise multiplier or target ε (clipping norm ``max_grad_norm``, δ ``delta``).
    """
    from fedrisk.config.horizontal import DPConfig
    from fedrisk.federation.horizontal import run_horizontal

    hcfg = config.federation.horizontal
    plain = hcfg.model_copy(update={"dp": DPConfig()})
    if hcfg.dp.active:
        private = hcfg
    else:
        noise = (
            {"target_epsilon": dp_cfg.target_epsilon}
            if dp_cfg.target_epsilon is not None
            else {"noise_multiplier": dp_cfg.noise_multiplier}
        )
        dp_section = DPConfig(
            mode="server-fixed", clipping_norm=dp_cfg.max_grad_norm, delta=dp_cfg.delta, **noise
        )
        private = hcfg.model_copy(update={"dp": dp_section})
    banks = {name: setting.parties[name] for name in setting.label_holders}

    def fit(members: np.ndarray, seed: int, dp: DPSGDConfig | None) -> Fitted:
        splits = {
            name: {
                "train": pop.ids[(pop.holder == name) & members],
                "val": pop.val[name],
                "audit": pop.ids[pop.holder == name],
            }
            for name in banks
        }
        with tempfile.TemporaryDirectory(prefix="fedrisk-membership-") as workdir:
            outcome = run_horizontal(
                banks, splits, config.model.kind, config.training, private if dp else plain,
                "inprocess",  # not Ray: its start-up would be paid once per shadow
                Path(workdir), seed, hidden=tuple(config.model.hidden), dropout=config.model.dropout,
            )  # fmt: skip
        logits = np.zeros(len(pop.ids))
        for name in banks:
            p = np.clip(outcome.scores[ScoreKey(name, "audit")].p, 1e-15, 1 - 1e-15)
            logits[pop.holder == name] = np.log(p) - np.log1p(-p)
        spent = None
        if dp:
            spent = {**outcome.privacy, "kind": "client-level (Flower DP wrappers)"}
        return Fitted(logits, spent)

    return fit


def _recipe(
    method: Method, config: ExperimentConfig, setting: Setting, pop: Population, dp_cfg: DPSGDConfig
) -> Recipe:
    vertical = setting.topology == "vertical"
    if method == "siloed":
        if vertical:
            holder = setting.label_holders[0]
            return _single_table_recipe(config, setting.parties[holder], pop.ids, pop.val[holder])
        return _per_holder_recipe(config, setting, pop)
    if method == "centralized":  # vertical: the runner's centralized model is the federated one's twin
        return (
            _twin_recipe(config, setting, pop)
            if vertical
            else _pooled_horizontal_recipe(config, setting, pop)
        )
    if method == "federated":
        return (
            _twin_recipe(config, setting, pop) if vertical else _flower_recipe(config, setting, pop, dp_cfg)
        )
    raise ValueError(f"unknown method {method!r}")


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
        recipe = _recipe(method, config, setting, pop, cfg.dp)
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
