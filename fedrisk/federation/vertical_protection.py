"""The label holder's protections in the federated vertical run, set up from ``federation.vertical``.

`build_protection` turns ``federation.vertical.protection`` into what the coordinator runs with:

* ``"he"``: a `ProtectedLink` that, before each step, sends every partner its ``[[dL/dz]]``
  (``train.vertical_he_grad``) instead of the plaintext gradient, opens the masked aggregates the partners
  return, and lets the opened aggregate ride on the step message (`fedrisk.protocol.vertical_he`);
* ``"noise"``: a gradient hook adding Gaussian noise to the partners' gradients;
* ``"label_dp"``: training labels after randomized response (`fedrisk.protocol.label_protection`).

Whatever the protection, the link also feeds a `fedrisk.protocol.leakage.LeakMeter` exactly what each
partner's messages carried (the gradient after every hook, or the ciphertext bytes), so the run reports the
label leakage of its own messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from flwr.app import RecordDict

from fedrisk.config.vertical import VerticalConfig
from fedrisk.models.split_data import Coverage
from fedrisk.models.split_holder import StepReply, StepRequest
from fedrisk.models.split_trainer import GradientHook
from fedrisk.protocol.label_protection import flip_probability, noise_hook, randomized_labels
from fedrisk.protocol.leakage import LeakMeter
from fedrisk.protocol.vertical import (
    HE_GRAD,
    HE_SETUP,
    SCORE,
    STEP,
    decode_he_reply,
    decode_reply,
    encode_he_grad,
    encode_he_setup,
    encode_step,
    with_payloads,
)
from fedrisk.protocol.vertical_he import LabelHolderHE, he_params


class Exchange(Protocol):
    """One message per holder, one reply each (the coordinator's link to the holders)."""

    round_trips: int

    def exchange(self, message_type: str, contents: Mapping[str, RecordDict]) -> dict[str, RecordDict]: ...


class ProtectedLink:
    """The coordinator's `HolderLink` with the protection's wire steps and the leak meter in it."""

    def __init__(self, link: Exchange, label_holder: str, he: LabelHolderHE | None, meter: LeakMeter) -> None:
        self.link = link
        self.label_holder = label_holder
        self.he = he
        self.meter = meter
        self._pending: dict[
            str, np.ndarray | None
        ] = {}  # rows each holder embedded last (awaiting a gradient)

    @property
    def round_trips(self) -> int:
        return self.link.round_trips

    def setup(self, partners: list[str]) -> None:
        """Under "he": every partner gets the public context and says how many columns it encodes."""
        if self.he is None:
            return
        replies = self.link.exchange(HE_SETUP, {p: encode_he_setup(self.he.public_context) for p in partners})
        for partner, content in replies.items():
            self.he.n_features[partner] = int(content.config_records["control"]["n_features"])

    def step(self, requests: Mapping[str, StepRequest], kind: str) -> dict[str, StepReply]:
        """One split-learning round trip (`fedrisk.models.split_trainer.HolderLink`), protected."""
        requests = dict(requests)
        payloads: dict[str, dict[str, bytes]] = {}
        if self.he is not None:
            payloads = self._encrypted_gradients(requests)
        else:
            for h, r in requests.items():
                if h != self.label_holder and r.grad is not None:
                    self.meter.received(h, self._pending.get(h), r.grad)
        for h, r in requests.items():
            self._pending[h] = r.rows
        message_type = SCORE if kind == "score" else STEP
        contents = {h: with_payloads(encode_step(r, kind), payloads.get(h)) for h, r in requests.items()}
        return {h: decode_reply(c) for h, c in self.link.exchange(message_type, contents).items()}

    def _encrypted_gradients(self, requests: dict[str, StepRequest]) -> dict[str, dict[str, bytes]]:
        """Replace partners' plaintext gradients by the encrypted exchange; return the opened aggregates."""
        assert self.he is not None
        own = requests.get(self.label_holder)
        batch = len(own.grad) if own is not None and own.grad is not None else 0
        encrypted = {}
        for h, r in list(requests.items()):
            if h == self.label_holder or r.grad is None:
                continue
            message = self.he.request(h, r.grad.reshape(len(r.grad), -1)[:, 0], batch_size=batch)
            requests[h] = dataclasses.replace(r, grad=None)  # the plaintext gradient never leaves
            if message is not None:
                encrypted[h] = message
                self.meter.received(h, self._pending.get(h), message)
        if not encrypted:
            return {}
        replies = self.link.exchange(HE_GRAD, {h: encode_he_grad(m) for h, m in encrypted.items()})
        opened = {}
        for h, content in replies.items():
            masked, seconds = decode_he_reply(content)
            opened[h] = {"opened": self.he.open(masked, seconds)}
        return opened


@dataclass
class Protection:
    """What the coordinator runs with under one protection."""

    name: str
    link: ProtectedLink
    hooks: list[GradientHook] = field(default_factory=list)
    train_labels: np.ndarray | None = None
    settings: dict = field(default_factory=dict)

    def report(self) -> dict:
        """The run's protection, its cost and the leak measured on the partners' own messages."""
        out = {"protection": self.name, **self.settings, "leak": self.link.meter.summary()}
        if self.link.he is not None:
            out["he"] = self.link.he.finish().to_dict()
        return out


def build_protection(
    vcfg: VerticalConfig,
    link: Exchange,
    label_holder: str,
    labels: np.ndarray,
    coverage: Mapping[str, Coverage],
    train: np.ndarray,
    step_size: int,
    seed: int,
) -> Protection:
    """The protection ``vcfg.protection`` names, with a leak meter on every partner's messages."""
    partners = [h for h in coverage if h != label_holder]
    meter = LeakMeter(labels, {p: coverage[p].pos for p in partners}, -(-len(train) // step_size), seed)
    name = vcfg.protection
    he = LabelHolderHE(he_params(vcfg.he_scheme, vcfg.he_key_bits)) if name == "he" else None
    protection = Protection(name, ProtectedLink(link, label_holder, he, meter))
    if name == "noise":
        rng = np.random.default_rng([seed, 11])
        protection.hooks.append(noise_hook(label_holder, vcfg.noise_multiplier, rng))
        protection.settings["noise_multiplier"] = vcfg.noise_multiplier
    elif name == "label_dp":
        rng = np.random.default_rng([seed, 13])
        protection.train_labels = randomized_labels(labels, train, vcfg.label_dp_epsilon, rng)
        protection.settings.update(
            label_dp_epsilon=vcfg.label_dp_epsilon, flip_probability=flip_probability(vcfg.label_dp_epsilon)
        )
    return protection
