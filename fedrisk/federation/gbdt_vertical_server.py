"""The label holder's ServerApp for vertical gradient-boosted trees: labels, the trees and the schedule.

The label holder bins its own table (found through the run config), keeps its labels and margins, and runs
`fedrisk.protocol.secureboost.VerticalSession` with one `FlowerPartnerLink` per partner: every protocol
message is one Flower message to that partner's node (`fedrisk.federation.gbdt_vertical_client`), recorded
by the grid (bytes on the wire). Outputs go to ``output-dir``, as for the split model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from fedrisk.core.errors import FedriskError
from fedrisk.federation.gbdt_vertical_client import MESSAGE_TYPES, decode, encode
from fedrisk.federation.nodes import party_nodes, read_party_table
from fedrisk.federation.vertical_server import LABEL_HOLDER_KEY, OUTPUT_DIR_KEY, PLAN_KEY, Plan
from fedrisk.models.gbdt import Binner, GBDTParams, boost
from fedrisk.protocol.secureboost import Cost, VerticalSession
from fedrisk.protocol.secureboost import messages as sb

PARAMS_KEY = "gbdt-params"
PROTECTION_KEY = "gbdt-protection"
KEY_BITS_KEY = "gbdt-key-bits"
LABEL_TABLE_KEY = "gbdt-label-holder-table"
RESULT_FILE = "gbdt-result.npz"
INFO_FILE = "gbdt-info.json"

app = ServerApp()


class FlowerPartnerLink:
    """`PartnerLink` over a Flower grid: one message to the partner's node per protocol step."""

    def __init__(self, grid: Grid, node_id: int, party: str, cost: Cost) -> None:
        self.grid, self.node_id, self.party, self.cost = grid, node_id, party, cost
        self.round_trips = 0

    def _call(self, msg: sb.Message) -> sb.Message | None:
        self.round_trips += 1
        started = time.perf_counter()
        message = Message(encode(msg), dst_node_id=self.node_id, message_type=MESSAGE_TYPES[type(msg)])
        (reply,) = list(self.grid.send_and_receive([message]))
        self.cost.add_time("partners", time.perf_counter() - started)
        if reply.has_error():
            raise RuntimeError(f"partner {self.party!r} failed on {type(msg).__name__}: {reply.error.reason}")
        return decode(reply.content) if "control" in reply.content.config_records else None

    rows = setup = gradients = histograms = split = decisions = close = _call


def _own_codes(table, plan: Plan, max_bins: int, name: str) -> dict[str, np.ndarray]:
    """The label holder's bins, fitted on its training applicants, for every split."""
    rows = pd.Index(table.ids).get_indexer(plan.applicants)
    binner = Binner(max_bins, name).fit(table.features.iloc[rows[plan.indices("train")]])
    return {
        s: binner.transform(table.features.iloc[rows[plan.indices(s)]]) for s in plan.splits
    }, binner.n_bins


def _rows_message(plan: Plan, partner: str, max_bins: int) -> sb.Rows:
    roster = plan.rosters[partner]
    positions = pd.Index(roster).get_indexer(plan.applicants).astype(np.int32)
    names = ["train", *[s for s in plan.splits if s != "train"]]
    parts = [positions[plan.indices(s)] for s in names]
    bounds = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    return sb.Rows(np.asarray(roster).astype(str), np.concatenate(parts), bounds, ",".join(names), max_bins)


def train_and_score(grid: Grid, context: Context) -> dict:
    """Train the trees from the label holder's side, score every split, write the outputs."""
    rc = context.run_config
    plan = Plan.load(Path(str(rc[PLAN_KEY])))
    holder = str(rc[LABEL_HOLDER_KEY])
    params = GBDTParams(**json.loads(str(rc[PARAMS_KEY])))
    table = read_party_table(str(rc[LABEL_TABLE_KEY]))
    nodes = party_nodes(grid)
    missing = [p for p in plan.rosters if p not in nodes]
    if missing:
        raise FedriskError("parties", f"no node runs {missing}", "start one node per partner")
    cost = Cost()
    links = [FlowerPartnerLink(grid, nodes[p], p, cost) for p in plan.rosters]
    for p, link in zip(plan.rosters, links, strict=True):
        link.rows(_rows_message(plan, p, params.max_bins))
    codes, n_bins = _own_codes(table, plan, params.max_bins, holder)
    y = {s: plan.labels[plan.indices(s)] for s in ("train", "val")}
    started = time.perf_counter()
    session = VerticalSession(
        codes["train"], y["train"], n_bins, params, links, str(rc[PROTECTION_KEY]), int(rc[KEY_BITS_KEY]),
        valid=(codes["val"], y["val"]), cost=cost,
    )  # fmt: skip
    setup_seconds = time.perf_counter() - started
    try:
        started = time.perf_counter()
        result = boost(session, params)
        train_seconds = time.perf_counter() - started
        scored = ["train", *plan.scored_splits]
        margins = {s: session.predict_margin(result.trees, codes[s], s) for s in scored}
    finally:
        session.close()
        for link in links:
            link.close(sb.Close())
    holders = [holder, *plan.rosters]
    gain = np.zeros(len(holders))
    for tree in result.trees:
        for node in tree.internal:
            gain[np.searchsorted(session.offsets, tree.feature[node], side="right") - 1] += tree.gain[node]
    n_trees = max(session.tree_id + 1, 1)
    info = {
        "history": [{"tree": t + 1, "val_loss": v} for t, v in enumerate(result.valid_loss)],
        "trees": len(result.trees),
        "trees_grown": session.tree_id + 1,
        "setup_seconds": setup_seconds,
        "train_seconds": train_seconds,
        "seconds_per_tree": train_seconds / n_trees,
        "encrypt_seconds_per_tree": cost.seconds.get("encrypt", 0.0) / n_trees,
        "decrypt_seconds_per_tree": cost.seconds.get("decrypt", 0.0) / n_trees,
        "protection": str(rc[PROTECTION_KEY]),
        "key_bits": int(rc[KEY_BITS_KEY]) if str(rc[PROTECTION_KEY]) == "he" else None,
        "importance": {
            h: float(g / gain.sum()) if gain.sum() > 0 else 0.0 for h, g in zip(holders, gain, strict=True)
        },
        "round_trips": sum(link.round_trips for link in links),
    }
    out_dir = Path(str(rc[OUTPUT_DIR_KEY]))
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        out_dir / RESULT_FILE,
        **{f"scores.{s}": 1.0 / (1.0 + np.exp(-m.astype(np.float64))) for s, m in margins.items()},
    )
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=1))
    return info


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Vertical trees from the label holder's plan; results to ``output-dir``."""
    train_and_score(grid, context)
