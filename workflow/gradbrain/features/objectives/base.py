"""What every objective shares: its call signature and the copy of small host tensors to the model's device."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager

import torch

Pause = Callable[[], ContextManager]
"""``capture.paused``: forward passes inside it (a stop-gradient target) are not captured as block outputs."""


def to_device(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Copy a small host tensor to ``device`` without stalling the host: a copy from pageable memory would wait
    for all queued GPU work, one from pinned memory is queued behind it."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, dtype or t.dtype, non_blocking=True)
