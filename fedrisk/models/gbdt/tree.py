"""One regression tree grown depth-wise on a `HistogramProvider`, and routing rows through it.

The builder sees node statistics, histograms and (feature, bin, default direction) only; rows stay with the
provider. The same code grows pooled trees, horizontal trees (banks' histograms summed) and vertical trees
(each holder's histograms side by side), so "federated splits == pooled splits" is a property of the inputs.
Per level it asks for the histograms of the smaller child of every split and gets the sibling by
subtraction (exact: histograms are fixed-point integers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrisk.models.gbdt.histogram import SCALE, HistogramProvider, Split, go_left
from fedrisk.models.gbdt.params import GBDTParams
from fedrisk.models.gbdt.split import find_split, leaf_value


@dataclass(frozen=True)
class Tree:
    """A grown tree as flat arrays indexed by node id (root = 0); `left == -1` marks a leaf.

    `feature` is the builder's global feature index; `bin` the bin code threshold (code <= bin goes left);
    `value` the leaf output (learning rate applied, float32); `gain` the loss change of internal nodes;
    `cover` the hessian sum of every node.
    """

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    bin: np.ndarray
    default_left: np.ndarray
    value: np.ndarray
    gain: np.ndarray
    cover: np.ndarray

    @property
    def n_nodes(self) -> int:
        return len(self.left)

    @property
    def internal(self) -> np.ndarray:
        """Ids of the internal (split) nodes."""
        return np.flatnonzero(self.left >= 0)

    @property
    def depth(self) -> int:
        depth = np.zeros(self.n_nodes, dtype=np.int32)
        for node in range(self.n_nodes):  # children always have larger ids than their parent
            if self.left[node] >= 0:
                depth[self.left[node]] = depth[self.right[node]] = depth[node] + 1
        return int(depth.max(initial=0))

    def decisions(self, codes: np.ndarray, missing: int, nodes: np.ndarray | None = None) -> np.ndarray:
        """Go-left bits (rows, n_nodes) for `nodes` (default: all internal) from bin codes over the builder's
        features; other columns are False. A holder calls it with its own codes for its own nodes."""
        out = np.zeros((codes.shape[0], self.n_nodes), dtype=bool)
        for node in self.internal if nodes is None else nodes:
            out[:, node] = go_left(
                codes[:, self.feature[node]], self.bin[node], self.default_left[node], missing
            )
        return out

    def leaves(self, decisions: np.ndarray) -> np.ndarray:
        """Leaf id of every row, given go-left bits for every internal node (from one or several holders)."""
        rows = np.arange(decisions.shape[0])
        node = np.zeros(decisions.shape[0], dtype=np.int64)
        for _ in range(self.depth):
            inner = self.left[node] >= 0
            nxt = np.where(decisions[rows, node], self.left[node], self.right[node])
            node = np.where(inner, nxt, node)
        return node

    def predict(self, codes: np.ndarray, missing: int) -> np.ndarray:
        """Leaf values for rows whose codes cover every feature of the tree (pooled use)."""
        return self.value[self.leaves(self.decisions(codes, missing))]


def grow_tree(provider: HistogramProvider, n_bins: np.ndarray, params: GBDTParams) -> Tree:
    """Grow one tree depth-wise (xgboost `grow_policy=depthwise`) from the provider's current gradients."""
    nodes = _Nodes()
    root_hist = provider.build([0])[0]
    total = root_hist[0].sum(axis=0) if root_hist.shape[0] else np.zeros(2)  # any feature sums all rows
    root = nodes.add((float(total[0]), float(total[1])))
    hist = {root: root_hist}
    frontier, depth = [root], 0
    while frontier and depth < params.max_depth:
        choices = {node: find_split(hist[node], nodes.stats[node], n_bins, params) for node in frontier}
        splits = []
        for node in frontier:
            choice = choices[node]
            if choice is None or not choice.expandable(params):
                continue
            left, right = nodes.add(choice.left_sum), nodes.add(choice.right_sum)
            nodes.set_split(node, left, right, choice)
            splits.append(Split(node, left, right, choice.feature, choice.bin, choice.default_left))
        if not splits:
            break
        counts = provider.apply_splits(splits)
        depth += 1
        frontier = [child for s in splits for child in (s.left, s.right)]
        if depth < params.max_depth:
            smaller = [s.left if c[0] <= c[1] else s.right for s, c in zip(splits, counts, strict=True)]
            built = provider.build(smaller)
            next_hist = {}
            for s, small, h in zip(splits, smaller, built, strict=True):
                other = s.right if small == s.left else s.left
                next_hist[small], next_hist[other] = h, hist[s.node] - h
            hist = next_hist
    return nodes.finish(params)


class _Nodes:
    """Growing arrays of a tree under construction."""

    def __init__(self) -> None:
        self.stats: list[tuple[float, float]] = []
        self.split: dict[int, tuple[int, int, int, int, bool, float]] = {}

    def add(self, stats: tuple[float, float]) -> int:
        self.stats.append(stats)
        return len(self.stats) - 1

    def set_split(self, node: int, left: int, right: int, choice) -> None:
        self.split[node] = (left, right, choice.feature, choice.bin, choice.default_left, choice.gain)

    def finish(self, params: GBDTParams) -> Tree:
        n = len(self.stats)
        left = np.full(n, -1, dtype=np.int32)
        right = np.full(n, -1, dtype=np.int32)
        feature = np.full(n, -1, dtype=np.int32)
        bin_ = np.full(n, -1, dtype=np.int32)
        default_left = np.zeros(n, dtype=bool)
        value = np.zeros(n, dtype=np.float32)
        gain = np.zeros(n, dtype=np.float32)
        for node, (lo, hi, f, b, dl, g) in self.split.items():
            left[node], right[node], feature[node], bin_[node], default_left[node], gain[node] = (
                lo,
                hi,
                f,
                b,
                dl,
                g,
            )
        for node in range(n):
            if left[node] < 0:
                value[node] = leaf_value(*self.stats[node], params)
        cover = np.array([h for _, h in self.stats], dtype=np.float64)
        return Tree(left, right, feature, bin_, default_left, value, gain, cover / SCALE)


_FIELDS = ("left", "right", "feature", "bin", "default_left", "value", "gain", "cover")


def pack_trees(trees: list[Tree]) -> dict[str, np.ndarray]:
    """Trees as a few flat arrays (npz- and Flower-friendly): each field concatenated, plus node offsets."""
    offsets = np.concatenate([[0], np.cumsum([t.n_nodes for t in trees])]).astype(np.int64)
    out = {"offsets": offsets}
    for name in _FIELDS:
        parts = [getattr(t, name) for t in trees]
        out[name] = np.concatenate(parts) if parts else np.zeros(0)
    return out


def unpack_trees(arrays: dict[str, np.ndarray]) -> list[Tree]:
    """Inverse of `pack_trees`."""
    offsets = np.asarray(arrays["offsets"])
    return [
        Tree(**{name: np.asarray(arrays[name])[a:b] for name in _FIELDS})
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]
