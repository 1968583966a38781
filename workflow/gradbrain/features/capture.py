"""The outputs of the sampled blocks in one forward pass, and how a block output is pooled to one vector per image."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from gradbrain.models.catalogue import POOLINGS


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


def pool(h: torch.Tensor, pooling: str, prefix_tokens: int = 0) -> torch.Tensor:
    """Pool a block output to (B, D).

    Tokens (B, T, D), the first ``prefix_tokens`` of them class and register tokens: ``mean`` averages every token,
    prefix tokens included (the lab's default); ``patch_mean`` the patch tokens only (timm's ``global_pool="avg"``;
    thingsvision's ``avg_pool`` drops the class token only); ``cls`` takes token 0; ``both`` concatenates ``cls`` and
    ``mean``. Feature maps (B, C, H, W) have no prefix tokens: ``mean`` and ``patch_mean`` average every position.
    """
    if h.ndim == 4:
        if pooling not in ("mean", "patch_mean"):
            raise ValueError(f"pooling '{pooling}' needs tokens; a convolutional block output has none (use mean)")
        return h.mean(dim=(2, 3))
    if h.ndim != 3:
        raise ValueError(f"cannot pool a block output of shape {tuple(h.shape)}")
    if pooling == "mean":
        return h.mean(1)
    if pooling == "patch_mean":
        return h[:, prefix_tokens:].mean(1)
    if pooling == "cls":
        return h[:, 0]
    if pooling == "both":
        return torch.cat([h[:, 0], h.mean(1)], dim=-1)
    raise ValueError(f"pooling '{pooling}' is not one of {POOLINGS}")


def pooled_tokens(pooling: str, prefix_tokens: int, class_token: bool) -> str:
    """Which tokens ``pool`` averages or takes, in words (the feature store's ``pooled_tokens`` attribute)."""
    if not class_token and not prefix_tokens:
        if pooling in ("cls", "both"):
            raise ValueError(f"pooling '{pooling}' needs a class token; the model has none (use mean or patch_mean)")
        return "every token or position (the model has no class or register tokens)"
    prefix = f"{prefix_tokens} prefix token{'s' if prefix_tokens != 1 else ''} (class and register)"
    return {
        "mean": f"every token: the {prefix} and the patch tokens",
        "patch_mean": f"the patch tokens only (the {prefix} dropped)",
        "cls": "the class token (token 0) only",
        "both": f"the class token, then the mean of every token (the {prefix} and the patch tokens)",
    }[pooling]
