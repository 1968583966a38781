"""A loaded network and what the extraction needs of it: its preprocessing, its blocks, its embedding and logits."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradbrain.models.catalogue import relative_depths


@dataclass
class Preprocessing:
    """Input pipeline taken from the model's own data config (applied by features.preprocess, which reproduces
    timm's and open_clip's eval transforms)."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # shortest: short side to floor(size/crop_pct), centre crop; squash: both sides

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
        }


@dataclass
class LoadedModel:
    """A network in eval mode with frozen parameters, its sampled blocks and how to call it."""

    spec: dict[str, Any]
    module: nn.Module
    blocks: list[nn.Module]
    layer_indices: list[int]
    preprocessing: Preprocessing
    weights_id: str
    extra: dict[str, Any] = field(default_factory=dict)
    prefix_tokens: int = 0
    """Tokens before the patch tokens in a block output (class and register tokens); 0 for feature maps."""
    class_token: bool = False
    """Whether token 0 is a class token (what ``cls`` pooling takes)."""

    @property
    def depths(self) -> list[float]:
        return relative_depths(self.layer_indices, len(self.blocks))

    @property
    def layer_names(self) -> list[str]:
        return [f"block{i:02d}" for i in self.layer_indices]

    @property
    def sampled_blocks(self) -> list[nn.Module]:
        return [self.blocks[i] for i in self.layer_indices]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (classifiers)."""
        return self.module(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled image embedding before any classifier (used by ssl_view and zero-shot objectives)."""
        if self.spec["source"] == "open_clip":
            return self.module.encode_image(x)
        feats = self.module.forward_features(x)
        return self.module.forward_head(feats, pre_logits=True)


def token_layout(module: nn.Module) -> tuple[int, bool]:
    """(prefix tokens, has a class token) of a network's block outputs: timm ViTs say so themselves
    (``num_prefix_tokens``, ``cls_token``), as do timm trunks inside open_clip; open_clip's own ViT prepends one
    class token (``class_embedding``); convolutional networks have none."""
    visual = getattr(module, "visual", None)
    vit = getattr(visual, "trunk", module) if visual is not None else module
    if hasattr(vit, "num_prefix_tokens"):
        return int(vit.num_prefix_tokens), getattr(vit, "cls_token", None) is not None
    if visual is not None and getattr(visual, "class_embedding", None) is not None:
        return 1, True
    return 0, False


def resolve_blocks(module: nn.Module, layouts: list[list[str]]) -> list[nn.Module]:
    """Blocks of the first layout whose dotted patterns all match (``*`` = one level).

    Containers (Sequential, ModuleList) give their children.
    """
    named = dict(module.named_modules())
    for layout in layouts:
        blocks: list[nn.Module] = []
        for pattern in layout:
            depth = pattern.count(".")
            matches = [n for n in named if n.count(".") == depth and fnmatch.fnmatch(n, pattern)]
            if not matches:
                break
            for name in sorted(matches, key=_natural_key):
                mod = named[name]
                blocks.extend(mod.children() if isinstance(mod, (nn.Sequential, nn.ModuleList)) else [mod])
        else:
            return blocks
    raise ValueError(f"no block layout of {layouts} matches the modules of {type(module).__name__}")


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in name.replace(".", " ").split()]
