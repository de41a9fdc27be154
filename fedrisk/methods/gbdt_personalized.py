"""The method ``personalized`` for ``model.kind = "gbdt"``: federated trees, then each bank's own trees on top.

The federation grows one booster on Flower (`fedrisk.federation.gbdt_horizontal`); every bank ends the run
holding it and the agreed bins. Each bank then boosts local trees on its own training and validation rows,
starting from the federated margin (`fedrisk.models.gbdt.personal`), as many as k-fold cross-validation
supports, none where the federated model is as good. That step needs no communication: in simulation the
driver plays each bank on that bank's rows alone, as it already does for the banks' scoring step.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from fedrisk.data.outcome import MethodOutcome, ScoredSet, ScoreKey
from fedrisk.data.setting import Setting
from fedrisk.models.gbdt import GBDTParams


def personalized_gbdt(config, setting: Setting, seed: int, workdir: Path, backend=None) -> MethodOutcome:
    """Federated boosting, then local boosting on top at every bank that has the defaults to choose on."""
    from fedrisk.federation.gbdt_horizontal import grow_gbdt_horizontal
    from fedrisk.methods.personalized import PersonalizationFallback
    from fedrisk.models.gbdt.personal import boost_on_top

    params = GBDTParams.from_config(config.model)
    personal = config.federation.horizontal.personal
    backend = config.federation.backend if backend is None else backend
    banks = {b: setting.parties[b] for b in setting.label_holders}
    forest = grow_gbdt_horizontal(banks, setting.splits, params, backend, Path(workdir))
    started = time.perf_counter()
    scores, train_scores, reports = {}, [], {}
    for name, bank in banks.items():
        rows = forest.rows[name]
        fit_rows = np.concatenate([rows["train"], rows["val"]])
        y = bank.label[fit_rows].astype(np.float32)
        encoded = forest.binner.encode(bank.features.iloc[fit_rows])
        needed = max(personal.min_defaults, personal.folds)
        n_defaults, n_goods = int(y.sum()), int(len(y) - y.sum())
        report: dict = {"model": "global", "trees": 0}
        if n_defaults < needed or n_goods < personal.folds:
            reason = (
                f"{n_defaults} defaults in its training and validation rows (personalising needs {needed})"
            )
            report["fallback"] = reason
            warnings.warn(
                f"federation.horizontal.personal.min_defaults: {name} keeps the global model (seed {seed}): {reason}",
                PersonalizationFallback,
                stacklevel=2,
            )
            local = None
        else:
            local = boost_on_top(
                encoded,
                y,
                forest.margin(bank, fit_rows),
                params,
                max_trees=params.n_trees,
                folds=personal.folds,
                patience=params.early_stopping_rounds,
                select=personal.select,
                seed=seed,
            )
            report.update(
                model="personal" if local.n_trees else "global",
                trees=local.n_trees,
                cv_global=local.cv_score_global,
                cv_personal=local.cv_score_personal,
            )
        reports[name] = report

        def score(positions: np.ndarray, bank=bank, local=local) -> np.ndarray:
            margin = forest.margin(bank, positions)
            if local is None:
                return 1.0 / (1.0 + np.exp(-margin.astype(np.float64)))
            return local.predict_proba(forest.binner.encode(bank.features.iloc[positions]), margin)

        for split, positions in rows.items():
            if split != "train":
                scored = score(positions)
                ids = np.asarray(setting.splits[name][split])
                scores[ScoreKey(name, split)] = ScoredSet(ids, bank.label[positions], scored)
        train_scores.append(score(rows["train"]))
    cost = forest.cost()
    cost["wall_seconds"] = forest.seconds + time.perf_counter() - started
    extra = {"personalization": {"mode": "finetune", "banks": reports, "clusters": [], "bytes_sent": 0}}
    return MethodOutcome(
        "personalized",
        scores,
        forest.info["history"],
        cost,
        train_scores=np.concatenate(train_scores),
        extra=extra,
    )
