"""Label leakage in vertical federation: what a passive holder learns of the bank's labels from its gradients.

In split learning the label holder sends every holder d loss / d embedding for the rows of the last batch.
For binary cross-entropy that gradient is ``(p - y) * d logit / d embedding``: its norm is large for the
rare defaults the model still scores low, and its direction flips with the label. Li et al. turned this
into two attacks a passive party can run on what it legitimately receives, and proposed perturbations:

    O. Li, J. Sun, X. Yang, W. Gao, H. Zhang, J. Xie, V. Smith, C. Wang. "Label Leakage and Protection in
    Two-party Split Learning". ICLR 2022 (arXiv:2102.08504).

No maintained library ships these attacks or defences for a torch split model; they are a few lines each
and are written here (the attacks in `fedrisk.protocol.leakage`, which also measures a federated run's own
messages). The audit reproduces the passive party's exact view: the same split model pieces
(`fedrisk.models.split`: `HolderBottom` on each holder's side, `SplitTop` on the label holder's), the same
per-batch exchange as the Flower coordinator (`fedrisk.federation.vertical_server`: embeddings up, gradients down,
snapshot/restore for early stopping), run in one process with a tap on the gradients each partner gets,
after the defence the label holder applies to them.

Attacks (scored per batch, reported as leak AUC: 0.5 = nothing learned, 1 = labels recovered):

* ``norm``: score a row by the L2 norm of its gradient (Li et al.'s norm scoring);
* ``direction``: the partner knows one default in the batch and scores every other row by the cosine
  between its gradient and that one's (Li et al.'s direction scoring).

Defences (applied by the label holder to the gradients it returns to partners; its own bottom gets the
exact gradient):

* ``noise``: isotropic Gaussian noise (Li et al.'s isotropic baseline), per coordinate std
  ``strength * max_j ||g_j|| / sqrt(d)`` over the batch, i.e. a noise vector about ``strength`` times the
  batch's largest gradient norm long;
* ``clip``: per-row norm clipping to the ``strength``-quantile of the batch's gradient norms (0 = every norm
  cut to the smallest, which equalises norms but keeps directions);
* ``max_norm``: Li et al.'s Max Norm heuristic: row ``j`` gets Gaussian noise with
  ``E||g_j + eta_j||^2 = max_k ||g_k||^2`` (per-coordinate variance ``(max_k ||g_k||^2 - ||g_j||^2) / d``),
  so every norm looks like the largest in expectation.

The cost of a defence is the KS it loses: the defended model's test KS against the undefended one's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from fedrisk.config.audit import DefenceSpec, LabelLeakageConfig
from fedrisk.config.model import TrainConfig
from fedrisk.config.vertical import VerticalConfig
from fedrisk.core.metrics import ks_statistic
from fedrisk.models.split import make_split_model, predict_twin_logits
from fedrisk.models.split_data import VerticalBlocks, vertical_blocks
from fedrisk.models.split_trainer import fit_twin
from fedrisk.protocol.leakage import PartnerView, direction_leak_auc, norm_leak_auc

if TYPE_CHECKING:  # the runner and the config compose this module; importing them here would be circular
    from fedrisk.config.experiment import ExperimentConfig
    from fedrisk.data.setting import Setting

__all__ = [
    "DefenceSpec",
    "LabelLeakageConfig",
    "VerticalBlocks",
    "apply_defence",
    "direction_leak_auc",
    "label_leakage_audit",
    "norm_leak_auc",
    "vertical_blocks",
]

# ---------------------------------------------------------------------------------------------------------
# Defences and attacks (Li et al. 2022)


def _norms(g: np.ndarray) -> np.ndarray:
    return np.linalg.norm(g, axis=tuple(range(1, g.ndim)))


def apply_defence(grad: np.ndarray, spec: DefenceSpec, rng: np.random.Generator) -> np.ndarray:
    """The gradient rows ``(n, d)`` a partner receives under ``spec`` (see the module docstring)."""
    if spec.kind == "none" or len(grad) == 0:
        return grad
    g = grad.astype(np.float64)
    d = g.shape[1]
    norms = _norms(g)
    if spec.kind == "noise":
        sigma = spec.strength * norms.max() / math.sqrt(d)
        out = g + rng.normal(0.0, 1.0, g.shape) * sigma
    elif spec.kind == "clip":
        bound = np.quantile(norms, spec.strength)
        out = g * np.minimum(1.0, bound / np.maximum(norms, 1e-30))[:, None]
    elif spec.kind == "max_norm":
        sigma = np.sqrt(np.maximum(norms.max() ** 2 - norms**2, 0.0) / d)
        out = g + rng.normal(0.0, 1.0, g.shape) * sigma[:, None]
    else:  # pragma: no cover - pydantic rejects other kinds
        raise ValueError(f"unknown defence {spec.kind!r}")
    return out.astype(grad.dtype)


# ---------------------------------------------------------------------------------------------------------
# The split-learning run with a tap on what partners receive


@dataclass
class TappedRun:
    """What one audited run produced: the partners' views, the test scores and the training length."""

    views: dict[str, PartnerView]
    test_logits: np.ndarray
    epochs_run: int
    best_epoch: int


def run_tapped_split(
    data: VerticalBlocks,
    labels: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    label_holder: str,
    kind: str,
    train_cfg: TrainConfig,
    vcfg: VerticalConfig,
    step_size: int,
    seed: int,
    defence: DefenceSpec,
    audited: Sequence[str],
) -> TappedRun:
    """The split-learning schedule (`fedrisk.models.split_trainer`) in one process, tapped at the partners.

    ``train``/``val``/``test`` index ``labels`` and the applicants of ``data``. Two gradient hooks sit on the
    real schedule: the defence perturbs what partners are sent, then the tap scores exactly what the
    ``audited`` partners received against the true labels.
    """
    model = make_split_model(
        kind,
        data.n_features,
        label_holder,
        seed,
        vcfg.embedding_dim,
        vcfg.bottom_hidden,
        vcfg.top_hidden,
        vcfg.dropout,
    )  # type: ignore[arg-type]
    noise_rng = np.random.default_rng([seed, 1])
    attack_rng = np.random.default_rng([seed, 2])
    views = {h: PartnerView() for h in audited}
    batches_per_epoch = -(-len(train) // step_size)
    calls: dict[str, int] = {}

    def defend(holder: str, rows: np.ndarray, grad: np.ndarray) -> np.ndarray | None:
        return None if holder == label_holder else apply_defence(grad, defence, noise_rng)

    def tap(holder: str, rows: np.ndarray, grad: np.ndarray) -> None:
        if holder not in views:
            return
        calls[holder] = calls.get(holder, 0) + 1
        epoch = 1 + (calls[holder] - 1) // batches_per_epoch
        views[holder].add(labels[rows], grad, epoch, attack_rng)

    coverage = {h: data.coverage[h] for h in model.top.holders}
    fit = fit_twin(
        model, data.blocks, coverage, labels, train, val, train_cfg, step_size, seed, hooks=(defend, tap)
    )
    X = {h: torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)) for h, b in data.blocks.items()}
    test_logits = predict_twin_logits(model, X, coverage, test)
    return TappedRun(views, test_logits, len(fit.history), fit.best_epoch)


# ---------------------------------------------------------------------------------------------------------
# The audit


def label_leakage_audit(
    config: ExperimentConfig, setting: Setting, seed: int, cfg: LabelLeakageConfig
) -> dict:
    """Leak AUC of each passive holder under each defence, and each defence's KS cost.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment (model kind, training, ``[federation.vertical]`` widths).
    setting : Setting
        The unit's parties and the label holder's splits.
    seed : int
        The unit's seed (initialisation, batch order, training subset, noise).
    cfg : LabelLeakageConfig

    Returns
    -------
    dict
        JSON-serialisable: ``label_holder``, ``partners``, ``batch_size``, ``base_rate``, ``train_rows``
        and ``results``: one entry per defence with ``test_ks``, ``ks_cost`` (undefended KS minus this
        one's), ``test_auc``, ``epochs_run`` and ``leak[partner]`` = mean per-batch ``norm_auc`` and
        ``direction_auc`` (and the first epoch's, the worst batch's, counts). ``{"skipped": reason}`` for
        horizontal runs.
    """
    if setting.topology != "vertical":
        return {
            "skipped": "label leakage is a vertical-federation audit (no gradients cross to partners here)"
        }
    holder = setting.label_holders[0]
    partners = [h for h in setting.parties if h != holder]
    audited = partners if cfg.partners is None else [p for p in cfg.partners if p in partners]
    if not audited:
        return {"skipped": f"none of {cfg.partners} is a partner in this run (partners: {partners})"}
    splits = setting.splits[holder]
    bank = setting.parties[holder]
    rng = np.random.default_rng([seed, 7])
    train_ids = np.asarray(splits["train"])
    if cfg.max_train_rows is not None and len(train_ids) > cfg.max_train_rows:
        train_ids = np.sort(rng.choice(train_ids, cfg.max_train_rows, replace=False))
    applicants = np.concatenate([train_ids, splits["val"], splits["test"]])
    labels = bank.label[pd.Index(bank.ids).get_indexer(applicants)].astype(np.int8)
    n_tr, n_val = len(train_ids), len(splits["val"])
    train = np.arange(n_tr)
    val = np.arange(n_tr, n_tr + n_val)
    test = np.arange(n_tr + n_val, len(applicants))
    data = vertical_blocks(setting.parties, holder, applicants, train_ids)

    train_cfg = config.training
    if cfg.epochs is not None:
        train_cfg = train_cfg.model_copy(update={"epochs": cfg.epochs})
    vcfg = config.federation.vertical
    step = cfg.batch_size or vcfg.step_size(train_cfg.batch_size, n_tr)
    defences = list(cfg.defences)
    if not any(d.kind == "none" for d in defences):
        defences.insert(0, DefenceSpec(kind="none"))
    results = []
    for spec in defences:
        run = run_tapped_split(
            data, labels, train, val, test, holder, config.model.kind, train_cfg, vcfg, step, seed, spec, audited,
        )  # fmt: skip
        y_test = labels[test]
        results.append(
            {
                "defence": spec.kind,
                "strength": spec.strength,
                "label": spec.label,
                "test_ks": ks_statistic(y_test, run.test_logits),
                "test_auc": float(roc_auc_score(y_test, run.test_logits)),
                "epochs_run": run.epochs_run,
                "best_epoch": run.best_epoch,
                "leak": {h: run.views[h].summary() for h in audited},
            }
        )
    reference = next(r["test_ks"] for r in results if r["defence"] == "none")
    for r in results:
        r["ks_cost"] = reference - r["test_ks"]
    return {
        "label_holder": holder,
        "partners": audited,
        "model": config.model.kind,
        "batch_size": int(step),
        "train_rows": int(n_tr),
        "base_rate": float(labels[train].mean()),
        "attacks": {
            "norm": "AUC of the gradient's L2 norm (Li et al. 2022, norm scoring)",
            "direction": "AUC of the cosine with one known default's gradient (Li et al. 2022)",
        },
        "results": results,
    }
