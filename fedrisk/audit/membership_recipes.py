"""How the membership audit retrains each method's model: the attacker's population and one recipe per method.

A recipe is ``(member mask over the population, seed, DP or None) -> Fitted``: the method's model trained
on the members the way the runner trains it (`fedrisk.methods.baselines`, the federated drivers), and its
logits on the whole population. With DP, the encoder is fitted off the members (on the label holder's
validation rows) and the model trained with DP-SGD (`fedrisk.audit.dp_sgd`), except the horizontal
federated model, which uses Flower's client-level DP.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from fedrisk.audit.dp_sgd import dp_sgd_train
from fedrisk.config.audit import DPSGDConfig, Method
from fedrisk.data.outcome import ScoreKey
from fedrisk.data.preprocessing import HolderPreprocessor
from fedrisk.data.table import PartyTable
from fedrisk.models import make_model, train
from fedrisk.models.split import SplitModel, make_split_model, predict_twin_logits
from fedrisk.models.split_data import VerticalBlocks, vertical_blocks
from fedrisk.models.split_trainer import fit_twin
from fedrisk.models.training import predict_logits, seed_torch

if TYPE_CHECKING:  # the runner and the config compose the audits; importing them here would be circular
    from fedrisk.config.experiment import ExperimentConfig
    from fedrisk.data.setting import Setting


class DenseSplit(nn.Module):
    """A `SplitModel` on dense inputs, in layers Opacus computes per-example gradients for.

    The split trainer's top scatters each partner's covered rows into the batch, so a layer sees fewer rows
    than the batch has; per-example gradients need every layer to see every example. Here a partner's
    absent rows are zeros with mask ``m = 0`` and its learned "missing" vector is a bias-free
    ``nn.Linear(1, width)`` applied to ``1 - m``: ``m * bottom(x) + fill(1 - m)`` is the same function
    (checked against the twin in the tests). The bottoms and the head are the split model's own modules,
    trained in place; `store` writes the fills back into the split model's top.
    Inputs: each holder's rows in embedding order, then each partner's 0/1 mask.
    """

    def __init__(self, model: SplitModel) -> None:
        super().__init__()
        top = model.top
        self.holders = list(top.holders)
        self.partners = [h for h in self.holders if h in top.missing]
        self.bottoms = model.bottoms
        self.head = top.head
        self.fills = nn.ModuleDict()
        for h in self.partners:
            fill = nn.Linear(1, top.width, bias=False)
            with torch.no_grad():
                fill.weight.copy_(top.missing[h].detach()[:, None])
            self.fills[h] = fill

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        masks = dict(zip(self.partners, xs[len(self.holders) :], strict=True))
        parts = []
        for h, x in zip(self.holders, xs[: len(self.holders)], strict=True):
            z = self.bottoms[h](x)
            if h in masks:
                m = masks[h].unsqueeze(-1)
                z = m * z + self.fills[h](1.0 - m)
            parts.append(z)
        if self.head is None:
            return torch.stack([z[:, 0] for z in parts]).sum(0)
        return self.head(torch.cat(parts, dim=1)).squeeze(-1)

    def store(self, model: SplitModel) -> None:
        """Copy the trained missing vectors into ``model``'s top (its bottoms and head are shared)."""
        with torch.no_grad():
            for h in self.partners:
                model.top.missing[h].copy_(self.fills[h].weight[:, 0])

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
            # DP-SGD's Poisson batches and per-example clipping are not the split trainer's schedule:
            # Opacus trains the same function in its dense form, then the missing vectors go back.
            dense = DenseSplit(model)
            inputs = dense.dense_inputs(data, len(applicants))
            spent = dp_sgd_train(dense, inputs, labels, train_idx, val_idx, train_cfg, dp, seed)
            dense.store(model)
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
    from fedrisk.config.horizontal_protection import DPConfig
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


def recipe_for(
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
