"""The outputs of the sampled blocks in one forward pass, and how a block output is pooled to one vector per image."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


class Capture:
    """Forward hooks that keep the outputs of the sampled blocks (graph attached, so gradients can be taken)."""

    def __init__(self, blocks: Sequence[torch.nn.Module]):
        self.outputs: list[torch.Tensor] = []
        self.active = True
        self.handles = [b.register_forward_hook(self._hook) for b in blocks]

    def _hook(self, module, inputs, output):
        if self.active:
            self.outputs.append(output[0] if isinstance(output, (tuple, list)) else output)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Forward passes inside this block are not captured (e.g. the stop-gradient view of ssl_view)."""
        self.active = False
        try:
            yield
        finally:
            self.active = True

    def take(self) -> list[torch.Tensor]:
        out, self.outputs = self.outputs, []
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def pool(h: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool a block output to (B, D): tokens (B,T,D) by mean / class token / both; feature maps (B,C,H,W) by mean."""
    if h.ndim == 4:
        if pooling != "mean":
            raise ValueError(f"pooling '{pooling}' needs tokens; a convolutional block output has none (use mean)")
        return h.mean(dim=(2, 3))
    if h.ndim != 3:
        raise ValueError(f"cannot pool a block output of shape {tuple(h.shape)}")
    if pooling == "mean":
        return h.mean(1)
    if pooling == "cls":
        return h[:, 0]
    return torch.cat([h[:, 0], h.mean(1)], dim=-1)
