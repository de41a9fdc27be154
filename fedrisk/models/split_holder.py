"""A holder's side of split learning: its bottom model, its optimiser and the rows awaiting a gradient.

No maintained library implements split learning's holder-side step (apply the gradient the label holder
sent for the last embeddings, then embed the next rows), so it is written here, on a plain torch module and
the project's Adam (`fedrisk.models.training.make_optimizer`). The wire format of these requests is
`fedrisk.protocol`'s business; this module only says what a holder does with one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedrisk.config.model import TrainConfig
from fedrisk.models.training import make_optimizer


@dataclass
class StepRequest:
    """What the label holder asks of one holder in one round trip (applied in field order).

    ``rows``/``eval_rows`` are int32 positions into the holder's roster (the id list it was sent).
    """

    snapshot: bool = False
    """Remember the current weights as the best so far (before applying ``grad``)."""
    grad: np.ndarray | None = None
    """d loss / d embedding for the rows of the previous training request."""
    restore: bool = False
    """Go back to the remembered best weights."""
    rows: np.ndarray | None = None
    """Training rows to embed (kept for the next ``grad``)."""
    eval_rows: np.ndarray | None = None
    """Rows to embed for inference only."""
    param_grads: Sequence[np.ndarray] | None = None
    """Instead of ``grad``: the gradient of every parameter of the bottom for the previous training request,
    computed outside autograd (by the encrypted protocol, `fedrisk.protocol.vertical_he`), in
    ``module.parameters()`` order and shapes."""


@dataclass
class StepReply:
    """A holder's answer: embeddings of the training rows (graph kept) and of the inference rows."""

    embedding: np.ndarray | None = None
    eval_embedding: np.ndarray | None = None


class HolderBottom:
    """A holder's bottom model, its Adam state and the rows awaiting a gradient.

    Parameters
    ----------
    module : nn.Module
        The bottom model (`make_bottom`).
    X : np.ndarray
        The holder's encoded rows in roster order (row ``i`` = the ``i``-th id the label holder sent).
    train_cfg : TrainConfig
        Learning rate and weight decay of the holder's Adam (the same as every other method's).
    """

    def __init__(self, module: nn.Module, X: np.ndarray, train_cfg: TrainConfig) -> None:
        self.module = module
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        self.optimizer = make_optimizer(module, train_cfg)
        self.best: torch.Tensor | None = None
        self.pending_rows: np.ndarray | None = None
        self._pending: torch.Tensor | None = None

    def step(self, request: StepRequest) -> StepReply:
        """Apply one request (see `StepRequest` for the order)."""
        if request.snapshot:
            self.best = self._flat_params().clone()
        if request.grad is not None:
            self._apply(request.grad)
        elif request.param_grads is not None:
            self._apply_param_grads(request.param_grads)
        if request.restore and self.best is not None:
            self._set_params(self.best)
        reply = StepReply()
        self._pending, self.pending_rows = None, None
        if request.rows is not None:
            self.module.train()
            self._pending = self.module(self._rows(request.rows))
            self.pending_rows = request.rows
            reply.embedding = self._pending.detach().numpy()
        if request.eval_rows is not None:
            self.module.eval()
            with torch.no_grad():
                reply.eval_embedding = self.module(self._rows(request.eval_rows)).numpy()
        return reply

    def _rows(self, rows: np.ndarray) -> torch.Tensor:
        return torch.index_select(self.X, 0, torch.from_numpy(rows.astype(np.int64)))

    def _apply(self, grad: np.ndarray) -> None:
        if self.pending_rows is None:
            raise RuntimeError("gradient received but no training rows are awaiting one")
        if self._pending is None:  # state restored in a fresh process: rebuild the same graph
            self._pending = self.module(self._rows(self.pending_rows))
        if grad.shape != tuple(self._pending.shape):
            raise RuntimeError(
                f"gradient of shape {grad.shape} for embeddings of shape {tuple(self._pending.shape)}"
            )
        self.optimizer.zero_grad()
        self._pending.backward(torch.from_numpy(grad))
        self.optimizer.step()
        self._pending = None
        self.pending_rows = None

    def pending_inputs(self) -> np.ndarray:
        """The encoded rows of the training request awaiting a gradient (float64, one row per row sent)."""
        if self.pending_rows is None:
            raise RuntimeError("no training rows are awaiting a gradient")
        return self._rows(self.pending_rows).numpy().astype(np.float64)

    def _apply_param_grads(self, grads: Sequence[np.ndarray]) -> None:
        if self.pending_rows is None:
            raise RuntimeError("gradient received but no training rows are awaiting one")
        params = list(self.module.parameters())
        shapes = [tuple(np.shape(g)) for g in grads]
        if shapes != [tuple(p.shape) for p in params]:
            raise RuntimeError(
                f"parameter gradients of shapes {shapes} for parameters of shapes {[tuple(p.shape) for p in params]}"
            )
        self.optimizer.zero_grad()
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.as_tensor(np.asarray(g), dtype=p.dtype).clone()
        self.optimizer.step()
        self._pending = None
        self.pending_rows = None

    def _flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()])

    @torch.no_grad()
    def _set_params(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self.module.parameters():
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    # Flower may run a node's next message in another process (Ray actors), so the learning state must
    # round-trip through plain arrays; the encoded rows do not (the holder re-reads its own table).
    # Flat vectors keep that to a handful of arrays per message.
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Weights, Adam moments, best weights and pending rows as a few flat arrays."""
        params = list(self.module.parameters())
        out = {"weights": self._flat_params().numpy()}
        if self.best is not None:
            out["best"] = self.best.numpy()
        if all(p in self.optimizer.state for p in params):
            for name in self.optimizer.state[params[0]]:
                out[f"adam.{name}"] = torch.cat(
                    [self.optimizer.state[p][name].reshape(-1) for p in params]
                ).numpy()
        if self.pending_rows is not None:
            out["pending_rows"] = np.asarray(self.pending_rows)
        return out

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Inverse of `state_arrays` (on a freshly built `HolderBottom`)."""
        params = list(self.module.parameters())
        self._set_params(torch.from_numpy(np.array(arrays["weights"])))
        self.best = torch.from_numpy(np.array(arrays["best"])) if "best" in arrays else None
        for key, value in arrays.items():
            if not key.startswith("adam."):
                continue
            flat, name = torch.from_numpy(np.array(value)), key[len("adam.") :]
            per_param = name == "step"  # Adam's step count: one scalar per parameter
            offset = 0
            for p in params:
                size = 1 if per_param else p.numel()
                chunk = flat[offset : offset + size]
                self.optimizer.state[p][name] = chunk.reshape(()) if per_param else chunk.view_as(p).clone()
                offset += size
        rows = arrays.get("pending_rows")
        self.pending_rows = None if rows is None else np.array(rows)
        self._pending = None
