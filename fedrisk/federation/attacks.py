"""Malicious banks for the robustness audit: model poisoning as a Flower client mod, label flipping as data.

Why a mod: a poisoned bank runs the same ClientApp as everyone else and corrupts only what leaves it, which
is exactly what a Flower mod sees (``(msg, ctxt, call_next) -> msg``). The mod is selected per bank by its
own list of party names, so one ClientApp object serves honest and malicious nodes alike (as under Flower's
engines, where every node runs the same app). It sits on the ``train`` handler only
(`fedrisk.federation.horizontal_client.build_client_app`): the preprocessing statistics round
(``train.stats``) and evaluation never reach it.

Attacks on the update ``Δ = w_local − w_global`` (Blanchard et al. 2017; Fang et al. 2020):

- ``sign_flip``: send ``w_global − scale·Δ`` (pushes the global model the wrong way);
- ``scale``: send ``w_global + scale·Δ`` (boosting: one bank's update dominates a mean).

Label flipping is a data attack, so it is done to the bank's table (`flip_labels`), not to messages.

`ParticipationLogMod` is the audit's instrument for dropouts: each bank notes the training rounds it
took part in, in its own directory, so the audit can say which banks (and rows) each round lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from fedrisk.data.table import PartyTable
from fedrisk.federation.nodes import resolve_party
from fedrisk.protocol.horizontal import ARRAYS_KEY, CONFIG_KEY, ROUND_KEY

UpdateAttack = Literal["sign_flip", "scale"]


def poison_update(
    global_weights: Sequence[np.ndarray],
    local_weights: Sequence[np.ndarray],
    attack: UpdateAttack,
    scale: float,
) -> list[np.ndarray]:
    """The parameters a malicious bank sends instead of ``local_weights`` (see the module docstring)."""
    factor = -scale if attack == "sign_flip" else scale
    out = []
    for g, w in zip(global_weights, local_weights, strict=True):
        g64, w64 = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
        out.append((g64 + factor * (w64 - g64)).astype(np.asarray(w).dtype))
    return out


@dataclass(frozen=True)
class UpdatePoisoningMod:
    """A Flower client mod: the banks named in ``banks`` poison their training replies.

    A frozen dataclass rather than a closure so that it pickles (Ray ships the ClientApp to its actors).

    Parameters
    ----------
    banks : frozenset of str
        Party names of the malicious banks; every other node passes through unchanged.
    attack : {"sign_flip", "scale"}
    scale : float
        Multiplier on the update (``sign_flip`` sends ``−scale·Δ``, ``scale`` sends ``+scale·Δ``).

    Notes
    -----
    Place it inside ``secaggplus_mod`` (so it poisons the plaintext update before masking) and outside
    the DP clipping mods (a malicious bank does not clip itself).
    """

    banks: frozenset[str]
    attack: UpdateAttack = "sign_flip"
    scale: float = 5.0

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN or not msg.has_content():
            return call_next(msg, ctxt)
        if resolve_party(ctxt).name not in self.banks:
            return call_next(msg, ctxt)
        global_weights = msg.content[ARRAYS_KEY].to_numpy_ndarrays()
        out = call_next(msg, ctxt)
        if out.has_error():
            return out
        local = out.content[ARRAYS_KEY]
        poisoned = poison_update(global_weights, local.to_numpy_ndarrays(), self.attack, self.scale)
        out.content[ARRAYS_KEY] = ArrayRecord(
            {k: Array(np.asarray(w)) for k, w in zip(local.keys(), poisoned, strict=True)}
        )
        return out


def flip_labels(table: PartyTable, ids: Iterable[str]) -> PartyTable:
    """The bank's table with the labels of ``ids`` flipped (0 <-> 1): a label-flipping bank's training data.

    Only the rows named are flipped, so the bank's held-out applicants keep their true outcomes and the
    audit still scores against the truth.
    """
    if table.label is None:
        raise ValueError(f"{table.name} has no label to flip")
    mask = np.isin(table.ids, np.asarray(list(ids), dtype=object))
    label = table.label.copy()
    label[mask] = 1 - label[mask]
    return dataclasses.replace(table, label=label, meta={**table.meta, "labels_flipped": int(mask.sum())})


PARTICIPATION_FILE = "rounds_trained.txt"


def _node_dir(ctxt: Context) -> Path:
    path = resolve_party(ctxt).data_path
    return path if path.is_dir() else path.parent


@dataclass(frozen=True)
class ParticipationLogMod:
    """A Flower client mod: a bank appends the number of every training round it fits to a file.

    The file (`PARTICIPATION_FILE`) lives in the bank's own data directory, so it works under every
    engine that shares the filesystem (in-process, Ray). Under SecAgg+ it runs inside ``secaggplus_mod``
    (`fedrisk.federation.horizontal_secagg`), so it sees the one message per round that carries the model.
    """

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type == MessageType.TRAIN and msg.has_content():
            config = msg.content.config_records.get(CONFIG_KEY)
            if config is not None and ROUND_KEY in config:
                with (_node_dir(ctxt) / PARTICIPATION_FILE).open("a", encoding="utf-8") as fh:
                    fh.write(f"{int(config[ROUND_KEY])}\n")
        return call_next(msg, ctxt)


def read_participation(bank_dir: Path) -> list[int]:
    """The training rounds a bank logged with `ParticipationLogMod` (sorted; empty if it never trained)."""
    path = Path(bank_dir) / PARTICIPATION_FILE
    if not path.exists():
        return []
    return sorted({int(line) for line in path.read_text(encoding="utf-8").split()})
