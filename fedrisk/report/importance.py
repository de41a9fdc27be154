"""The gradient-boosted trees section: which holder's columns the trees used, and what a tree cost.

Reads results.json's ``importance`` (per method, each holder's share of the trees' total split gain, mean
over seeds) and the per-tree entries of ``cost``; absent for other model kinds, so the section is too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedrisk.report.fmt import human_bytes, human_seconds, md_table


def trees_section(results: Mapping, methods: Sequence[str]) -> str | None:
    """Markdown for ``model.kind = "gbdt"`` runs, or None."""
    importance = results.get("importance") or {}
    cost = results.get("cost") or {}
    if not importance and "seconds_per_tree" not in cost:
        return None
    parts = ["## Gradient-boosted trees"]
    if "seconds_per_tree" in cost:
        protection = cost.get("protection", "none")
        bits = f", Paillier {cost['key_bits']} bits" if protection == "he" and cost.get("key_bits") else ""
        rows = [
            ["Trees kept (mean over seeds)", f"{cost.get('trees', float('nan')):.0f}"],
            ["Seconds per federated tree", human_seconds(cost.get("seconds_per_tree"))],
            [
                f"Encryption seconds per tree (protection {protection}{bits})",
                human_seconds(cost.get("encrypt_seconds_per_tree")),
            ],
            ["Bytes per federated tree", human_bytes(cost.get("bytes_per_tree"))],
        ]
        parts.append(md_table(["Federated trees", "Value"], rows))
    shown = [m for m in methods if m in importance]
    if shown:
        holders = sorted({h for m in shown for h in importance[m]})
        rows = [[h, *(f"{importance[m].get(h, 0.0):.0%}" for m in shown)] for h in holders]
        parts.append(
            "Share of the trees' split gain by holder (which holder's columns the splits used; the label holder "
            "alone is 100% for siloed):\n\n" + md_table(["Holder", *shown], rows)
        )
    return "\n\n".join(parts)
