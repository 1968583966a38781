"""Placebo gradients: the same network's per-image gradients under objectives that are not its own (issue 22).

Placebo j evaluates the model's own objective on its network output rotated by a seeded random orthogonal matrix
Q_j (Haar-distributed: the QR factor of a Gaussian matrix with the signs of R's diagonal), against the model's own
decision: a classifier's cross-entropy of the rotated logits z Q_j against the top class of z
(``objectives.base.top_class``); the zero-shot losses of the rotated image embedding against the text bank, with the
unrotated embedding's top text; ``ssl_view``'s cosine of the rotated embedding with its (unrotated) view. The
forward pass, the decided class, the backward path through the network and the loss's form and scale (a rotation
keeps norms) are the model's; only the rest of the error that flows back is not. Placebos that took the rotated
output's own top class carried another partition of the images than the model's decision, and a brain reading any
network trained on the task out-predicted them with the model's gradients (docs/decisions.md). A forward-only
brain, whatever it reads of the forward pass, has no reason to be predicted better by the model's own gradients
than by these, which is what the test of gradient-specific signal asks of a brain (``encoding.joint``).

The objective runs once on the real output (:meth:`Placebos.recording`), its calls of ``model.logits`` and
``model.embed`` are taped, and each placebo replays the tape (:meth:`Placebos.replaying`) with the graph-carrying
output rotated: no forward pass is repeated, each placebo costs one backward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from gradbrain.features.kinds import placebo_key
from gradbrain.features.objectives.base import KEPT_DECISION, LAST_DECISION
from gradbrain.models.model import LoadedModel

OUTPUT_METHODS = ("logits", "embed")
UNSUPPORTED = ("mae_recon",)


def rotation(seed: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A Haar-random orthogonal (dim, dim) matrix fixed by ``seed``, drawn on the CPU in float64."""
    g = torch.Generator().manual_seed(int(seed))
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(device, dtype)


class Placebos:
    """``count`` placebo objectives of one model, seeded by ``seed`` (placebo j by seed * 1000 + j)."""

    def __init__(self, model: LoadedModel, count: int, seed: int = 0):
        objective = model.spec["objective"]
        if count and objective in UNSUPPORTED:
            raise ValueError(
                f"models.{model.spec['name']}: placebo gradients are not defined for objective {objective}; "
                "set extraction.placebos: 0 or give the model another objective (ssl_view)"
            )
        self.model, self.count, self.seed = model, int(count), int(seed)
        self._tape: list[torch.Tensor] = []
        self._rotations: dict[tuple, torch.Tensor] = {}

    @property
    def keys(self) -> list[str]:
        return [placebo_key(j) for j in range(self.count)]

    @contextmanager
    def _patched(self, call) -> Iterator[None]:
        """``model.logits`` and ``model.embed`` wrapped by ``call`` (on top of any wrapper already there, such as a
        learning rule's output capture), restored on exit."""
        model, saved = self.model, {m: self.model.__dict__.get(m) for m in OUTPUT_METHODS}
        for method in OUTPUT_METHODS:
            setattr(model, method, call(getattr(model, method)))
        try:
            yield
        finally:
            for method, previous in saved.items():
                if previous is None:
                    model.__dict__.pop(method, None)
                else:
                    setattr(model, method, previous)

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Tape every output the objective asks of the model (in call order)."""
        self._tape.clear()

        def call(bound):
            def wrapped(x):
                out = bound(x)
                self._tape.append(out)
                return out

            return wrapped

        with self._patched(call):
            yield

    def _rotation(self, j: int, out: torch.Tensor) -> torch.Tensor:
        key = (j, out.shape[-1], out.device, out.dtype)
        if key not in self._rotations:
            self._rotations[key] = rotation(self.seed * 1000 + j, out.shape[-1], out.device, out.dtype)
        return self._rotations[key]

    @contextmanager
    def replaying(self, j: int) -> Iterator[None]:
        """The taped outputs again, in order, the graph-carrying ones rotated by Q_j (a stop-gradient target, such
        as ``ssl_view``'s view, is replayed as it was)."""
        tape = iter(list(self._tape))

        def call(bound):
            def wrapped(x):
                out = next(tape, None)
                if out is None:
                    raise RuntimeError("the objective asked the model for more outputs in a placebo than in its pass")
                return out @ self._rotation(j, out) if out.requires_grad else out

            return wrapped

        with self._patched(call):
            yield

    def gradients(self, objective, x: torch.Tensor, index: torch.Tensor, pause, outputs: list[torch.Tensor],
                  retain_last: bool) -> list[tuple[torch.Tensor, ...]]:  # fmt: skip
        """Per placebo, d sum_i L_j(x_i) / d ``outputs`` (the block outputs of the taped forward pass)."""
        grads, attrs = [], self.model.__dict__
        decision = attrs.pop(LAST_DECISION, None)  # set by the objective's real pass on this batch, if it decides
        if decision is not None:
            attrs[KEPT_DECISION] = decision
        try:
            for j in range(self.count):
                with self.replaying(j):
                    losses = objective(self.model, x, index, pause)
                retain = retain_last or j < self.count - 1
                grads.append(torch.autograd.grad(losses.sum(), outputs, retain_graph=retain))
        finally:
            attrs.pop(KEPT_DECISION, None)
        return grads
