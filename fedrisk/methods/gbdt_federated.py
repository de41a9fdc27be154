"""The runner's view of federated gradient-boosted trees: a `Setting` in, a `MethodOutcome` out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedrisk.data.outcome import MethodOutcome
from fedrisk.models.gbdt import GBDTParams

TREE_COST_KEYS = (
    "seconds_per_tree",
    "encrypt_seconds_per_tree",
    "decrypt_seconds_per_tree",
    "trees",
    "trees_grown",
)


def federated_vertical(
    config, setting, seed: int, workdir: Path, segments: dict[str, dict[str, np.ndarray]]
) -> MethodOutcome:
    """SecureBoost-style trees: partners' histograms (Paillier-encrypted under protection = 'he')."""
    from fedrisk.federation.gbdt_vertical import run_gbdt_vertical

    holder = setting.label_holders[0]
    vcfg = config.federation.vertical
    if config.runner.workers > 1 and vcfg.psi_parallel:  # the runner already keeps both cores busy
        vcfg = vcfg.model_copy(update={"psi_parallel": False})
    outcome, info = run_gbdt_vertical(
        setting.parties, holder, setting.splits[holder], GBDTParams.from_config(config.model), vcfg,
        config.federation.backend, workdir, seed,
    )  # fmt: skip
    result = outcome.to_method_outcome("federated", holder)
    trees = max(info["trees_grown"], 1)
    result.cost.update({k: info[k] for k in TREE_COST_KEYS})
    result.cost["bytes_per_tree"] = (outcome.bytes_sent - outcome.psi_bytes) / trees
    result.cost["protection"] = info["protection"]
    result.cost["key_bits"] = info["key_bits"]
    result.extra["importance"] = info["importance"]
    return result


def federated_horizontal(config, setting, seed: int, workdir: Path) -> MethodOutcome:
    """Banks' histograms summed on Flower (lossless: the pooled histogram on agreed bins)."""
    from fedrisk.federation.gbdt_horizontal import run_gbdt_horizontal

    banks = {b: setting.parties[b] for b in setting.label_holders}
    return run_gbdt_horizontal(
        banks, setting.splits, GBDTParams.from_config(config.model), config.federation.backend, workdir
    )
