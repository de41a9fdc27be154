"""Who holds what in one unit of work: the parties' tables, the topology and the label holders' splits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedrisk.config import ExperimentConfig
from fedrisk.core.errors import FedriskError
from fedrisk.data.table import PartyTable

# ---------------------------------------------------------------------------------------------------------
# Parties and topology


@dataclass
class Setting:
    """Who holds what in one unit: the tables, the topology and the label holders' splits."""

    topology: str
    parties: dict[str, PartyTable]
    label_holders: list[str]
    splits: dict[str, dict[str, np.ndarray]]
    rejected: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """Per label holder, ``{"train_rejected"|"val_rejected": ids}``: applicants its past policy rejected
    (``split.accepted_only``), so no observed outcome: neither trained on nor scored, only recorded."""

    def split_rows(self, seed: int):
        """Every label holder's split as rows ``seed, party, id, split`` (``splits.parquet``)."""
        from fedrisk.data.splits import splits_frame

        rows = {name: {**by_split, **self.rejected.get(name, {})} for name, by_split in self.splits.items()}
        return splits_frame(rows, seed)


def build_parties(config: ExperimentConfig, seed: int) -> dict[str, PartyTable]:
    if config.data.source == "tables":
        from fedrisk.data.tables import load_tables

        return load_tables(config.data.parties)
    from fedrisk.data.synthetic import generate_world

    return generate_world(config.world, seed).parties


def resolve_topology(config: ExperimentConfig, parties: Mapping[str, PartyTable]) -> tuple[str, list[str]]:
    """Vertical: exactly one labelled party. Horizontal: several labelled parties with the same columns."""
    labelled = [name for name, t in parties.items() if t.has_label]
    if not labelled:
        raise FedriskError(
            "data.parties", "no party has a label", "set label = '<column>' on the label holder"
        )
    topology = config.topology
    if topology == "auto":
        topology = "vertical" if len(labelled) == 1 else "horizontal"
    if topology == "vertical":
        if len(labelled) != 1:
            raise FedriskError(
                "data.parties",
                f"vertical federation needs exactly one labelled party (got {len(labelled)}: {', '.join(labelled)})",
                "keep the label on the label holder only, or set topology = 'horizontal'",
            )
        if len(parties) < 2 and config.data.partners is None:
            raise FedriskError(
                "data.parties", "vertical federation needs at least one partner", "add a partner's table"
            )
        return topology, labelled
    if len(labelled) < 2:
        raise FedriskError(
            "topology",
            "horizontal federation needs at least two labelled parties",
            "add banks or use 'vertical'",
        )
    reference = list(parties[labelled[0]].features.columns)
    for name in labelled[1:]:
        columns = list(parties[name].features.columns)
        if sorted(columns) != sorted(reference):
            missing = sorted(set(reference) - set(columns))[:5]
            extra = sorted(set(columns) - set(reference))[:5]
            raise FedriskError(
                f"data.parties.{name}",
                f"feature columns differ from '{labelled[0]}' (missing {missing}, extra {extra})",
                "horizontal federation needs the same feature columns at every bank",
            )
        numeric, reference_numeric = parties[name].numeric_columns(), parties[labelled[0]].numeric_columns()
        if sorted(numeric) != sorted(reference_numeric):  # found here, before any results folder exists
            differ = sorted(set(numeric) ^ set(reference_numeric))[:5]
            raise FedriskError(
                f"data.parties.{name}",
                f"columns {differ} are numeric at one bank and categorical at the other ('{labelled[0]}')",
                "give every bank the same feature columns with the same types",
            )
    return topology, labelled


def build_setting(config: ExperimentConfig, seed: int) -> Setting:
    from fedrisk.data.splits import REJECTED, split_firms

    parties = build_parties(config, seed)
    topology, label_holders = resolve_topology(config, parties)
    if topology == "vertical" and config.data.partners is not None:
        unknown = sorted(set(config.data.partners) - set(parties))
        if unknown:
            raise FedriskError(
                "data.partners",
                f"unknown holders {unknown}",
                f"choose from {sorted(set(parties) - set(label_holders))}",
            )
        keep = set(label_holders) | set(config.data.partners)
        parties = {name: table for name, table in parties.items() if name in keep}
    s = config.split
    # one split per firm across every label holder (a firm is never test at one bank and train at another)
    splits = split_firms(
        [parties[name] for name in label_holders],
        s.test_fraction,
        s.val_fraction,
        seed,
        s.out_of_time,
        s.accepted_only,
    )
    rejected = {
        name: {s: by_split.pop(s) for s in list(by_split) if s.endswith(REJECTED)}
        for name, by_split in splits.items()
    }
    if topology == "horizontal":
        parties = {name: parties[name] for name in label_holders}
    else:  # a partner that knows none of the training applicants has nothing to train on (wrong id column?)
        holder = label_holders[0]
        check_overlap(parties, holder, config.data.min_overlap)
        for name, table in parties.items():
            if name != holder and not np.isin(splits[holder]["train"], table.ids).any():
                raise FedriskError(
                    f"data.parties.{name}.id",
                    f"no id in common with {holder}'s training applicants "
                    f"(e.g. {table.ids[0]!r} vs {splits[holder]['train'][0]!r})",
                    "check the id column and that ids are written the same way in both tables",
                )
    return Setting(topology, parties, label_holders, splits, rejected)


def matched_firms(parties: Mapping[str, PartyTable], holder: str) -> dict[str, int]:
    """Partner -> how many of the label holder's firms it holds (ids compare as text)."""
    ids = parties[holder].ids
    return {name: int(np.isin(ids, t.ids).sum()) for name, t in parties.items() if name != holder}


def check_overlap(parties: Mapping[str, PartyTable], holder: str, min_overlap: int) -> None:
    """Refuse a partner that shares fewer than ``min_overlap`` firms with the label holder: so small an
    overlap is a wrong id column or format far more often than real data, and too little to learn from."""
    n = parties[holder].n_rows
    for name, matched in matched_firms(parties, holder).items():
        if matched < min_overlap:
            raise FedriskError(
                "data.min_overlap",
                f"{name} shares {matched} firms with {holder} (match rate {matched / n:.1%} of {n}), "
                f"fewer than the {min_overlap} required",
                "check that both id columns hold the same identifier written the same way (ids compare as "
                "text: '000123' is not '123'), or lower data.min_overlap",
            )


def data_summary(setting: Setting) -> dict:
    """Rows per holder and (vertical) each partner's match rate: the share of the label holder's firms it
    holds. Reported in results.json (``data``) and the report, so a poor join is seen, not guessed."""
    block: dict = {"rows": {name: t.n_rows for name, t in setting.parties.items()}}
    if setting.topology == "vertical":
        holder = setting.label_holders[0]
        n = setting.parties[holder].n_rows
        block["label_holder"] = holder
        block["partners"] = {
            name: {"rows": setting.parties[name].n_rows, "matched": matched, "match_rate": matched / n}
            for name, matched in matched_firms(setting.parties, holder).items()
        }
    return block


# ---------------------------------------------------------------------------------------------------------
def coverage_segments(setting: Setting) -> dict[str, dict[str, np.ndarray]]:
    """For vertical runs: which test applicants each partner knows (KS is reported for both groups)."""
    if setting.topology != "vertical":
        return {}
    holder = setting.label_holders[0]
    out: dict[str, dict[str, np.ndarray]] = {}
    for split, ids in setting.splits[holder].items():
        if split in ("train", "val"):
            continue
        masks = {}
        for name, table in setting.parties.items():
            if name == holder:
                continue
            known = np.isin(ids, table.ids)
            masks[f"covered_by_{name}"] = known
            masks[f"uncovered_by_{name}"] = ~known
        out[split] = masks
    return out
