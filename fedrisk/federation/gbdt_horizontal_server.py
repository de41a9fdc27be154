"""The server's ServerApp for horizontal gradient-boosted trees: bins agreed, histograms summed, trees grown.

The server never sees a row: it unions the banks' categorical levels, merges their bin summaries into one
binning (`fedrisk.models.gbdt.horizontal.merge_bins`), derives the base score from label and row counts,
then runs the same boosting loop and tree builder as every other topology with `FlowerBanks` as the
histogram provider (the banks' histograms added bin by bin, which is exactly the pooled histogram).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedrisk.federation.backends import OUTPUT_DIR_KEY
from fedrisk.federation.gbdt_horizontal_client import arrays_of, content, control_of
from fedrisk.federation.nodes import party_nodes
from fedrisk.models.gbdt import GBDTParams, Split, Tree, boost
from fedrisk.models.gbdt.binning import ColumnBins
from fedrisk.models.gbdt.booster import margin_of_rate
from fedrisk.models.gbdt.horizontal import BinSummary, merge_bins, union_levels
from fedrisk.models.gbdt.tree import pack_trees

PARAMS_KEY = "gbdt-params"
MODEL_FILE = "gbdt-model.npz"
INFO_FILE = "gbdt-info.json"

app = ServerApp()


class FlowerBanks:
    """Histogram provider and boosting session over the banks' ClientApps (one message per bank per step)."""

    def __init__(self, grid: Grid, nodes: dict[str, int], n_bins: np.ndarray) -> None:
        self.grid, self.nodes, self.n_bins = grid, nodes, n_bins
        self.provider = self
        self.round_trips = 0

    @property
    def n_features(self) -> int:
        return len(self.n_bins)

    def ask(self, message_type: str, body: RecordDict | None = None) -> list[RecordDict]:
        """One message to every bank (the same content), their replies in bank order."""
        self.round_trips += 1
        body = body or content()
        messages = [
            Message(copy.deepcopy(body), dst_node_id=node, message_type=message_type)
            for node in self.nodes.values()
        ]
        replies = {r.metadata.src_node_id: r for r in self.grid.send_and_receive(messages)}
        for bank, node in self.nodes.items():
            if node not in replies or replies[node].has_error():
                reason = replies[node].error.reason if node in replies else "no reply"
                raise RuntimeError(f"bank {bank!r} failed on {message_type}: {reason}")
        return [replies[node].content for node in self.nodes.values()]

    # BoostingSession
    def start_tree(self) -> None:
        self.ask("train.gbdth_start")

    def finish_tree(self, tree: Tree) -> float | None:
        replies = [control_of(r) for r in self.ask("train.gbdth_finish", content(pack_trees([tree])))]
        rows = sum(int(r["rows"]) for r in replies)
        return float(sum(float(r["loss_sum"]) for r in replies) / rows) if rows else None

    # HistogramProvider
    def build(self, nodes: Sequence[int]) -> np.ndarray:
        replies = self.ask("query.gbdth_build", content({"nodes": np.asarray(nodes, dtype=np.int32)}))
        return sum(arrays_of(r)["hist"] for r in replies)

    def apply_splits(self, splits: Sequence[Split]) -> np.ndarray:
        table = np.array(
            [[s.node, s.left, s.right, s.feature, s.bin, s.default_left] for s in splits], dtype=np.int64
        )
        return sum(arrays_of(r)["counts"] for r in self.ask("train.gbdth_split", content({"splits": table})))


def _summary(reply: RecordDict) -> BinSummary:
    arrays, control = arrays_of(reply), control_of(reply)
    names = json.loads(str(control["columns"]))
    levels = json.loads(str(control["levels"]))
    columns = [
        ColumnBins(n, arrays[f"cuts.{j}"], tuple(levels[n]) if n in levels else None)
        for j, n in enumerate(names)
    ]
    return BinSummary(columns, [arrays[f"counts.{j}"] for j in range(len(names))])


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Agree the bins, grow the trees, write the model and the history to ``output-dir``."""
    params = GBDTParams(**json.loads(str(context.run_config[PARAMS_KEY])))
    out_dir = Path(str(context.run_config[OUTPUT_DIR_KEY]))
    banks = FlowerBanks(grid, dict(sorted(party_nodes(grid).items())), np.zeros(0))
    started = time.perf_counter()
    first = [control_of(r) for r in banks.ask("query.gbdth_levels")]
    levels = union_levels([{k: tuple(v) for k, v in json.loads(str(c["levels"])).items()} for c in first])
    rate = sum(int(c["positives"]) for c in first) / max(sum(int(c["rows"]) for c in first), 1)
    ask = content(levels=json.dumps(levels), max_bins=params.max_bins)
    binner = merge_bins([_summary(r) for r in banks.ask("query.gbdth_summary", ask)], params.max_bins)
    base = margin_of_rate(rate)
    banks.ask("train.gbdth_setup", content(bins=json.dumps(binner.to_dict()), base_margin=float(base)))
    banks.n_bins = binner.n_bins
    setup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = boost(banks, params)
    train_seconds = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / MODEL_FILE, base=np.float32(base), **pack_trees(result.trees))
    grown = max(len(result.valid_loss), len(result.trees), 1)
    info = {
        "bins": binner.to_dict(),
        "history": [{"tree": t + 1, "val_loss": v} for t, v in enumerate(result.valid_loss)],
        "trees": len(result.trees),
        "trees_grown": grown,
        "setup_seconds": setup_seconds,
        "train_seconds": train_seconds,
        "seconds_per_tree": train_seconds / grown,
        "round_trips": banks.round_trips,
    }
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=1))
