"""What every objective shares: its call signature and the copy of small host tensors to the model's device."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager

import torch

Pause = Callable[[], ContextManager]
"""``capture.paused``: forward passes inside it (a stop-gradient target) are not captured as block outputs."""

LAST_DECISION, KEPT_DECISION = "_last_decision", "_kept_decision"
"""Model attributes: the top class of the objective's last real pass, and the one a placebo keeps (``top_class``)."""


def top_class(model: object, logits: torch.Tensor) -> torch.Tensor:
    """The objective's target: the model's own top class, argmax_c logits_c (detached). A placebo (features/placebo.py)
    replays the objective on a rotated output but keeps the decision of the real pass, so that its error carries the
    model's decided class as the real error does and differs only in the rest."""
    kept = model.__dict__.get(KEPT_DECISION)
    if kept is not None:
        return kept
    top = logits.argmax(1).detach()
    model.__dict__[LAST_DECISION] = top
    return top


def to_device(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Copy a small host tensor to ``device`` without stalling the host: a copy from pageable memory would wait
    for all queued GPU work, one from pinned memory is queued behind it."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, dtype or t.dtype, non_blocking=True)
