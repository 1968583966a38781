"""``ssl_view``: the self-supervised proxy, against a seeded augmented view of the same image."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from gradbrain.features.objectives.base import Pause, to_device
from gradbrain.models.model import LoadedModel


def view_params(seed: int, h: int, w: int, min_scale: float = 0.5) -> tuple[int, int, int, int, bool, float]:
    """The seeded augmentation of one image: crop box (top, left, height, width), horizontal flip, brightness."""
    g = torch.Generator().manual_seed(int(seed))
    scale = min_scale + (1 - min_scale) * torch.rand((), generator=g).item()
    ch, cw = max(1, round(h * scale**0.5)), max(1, round(w * scale**0.5))
    top = int(torch.randint(0, h - ch + 1, (), generator=g))
    left = int(torch.randint(0, w - cw + 1, (), generator=g))
    flip = torch.rand((), generator=g).item() < 0.5
    return top, left, ch, cw, flip, 0.8 + 0.4 * torch.rand((), generator=g).item()


def seeded_views(x: torch.Tensor, seeds: Sequence[int], min_scale: float = 0.5) -> torch.Tensor:
    """Per image of (B,C,H,W): a random resized crop (bilinear), flip and brightness change fixed by its seed.

    One batched ``grid_sample`` on the images' device (no host round trip); each output pixel samples the crop as
    ``F.interpolate(crop, (H, W), mode="bilinear", align_corners=False)`` does, source coordinates clamped to the
    crop, so a view depends on its own image and seed only.
    """
    b, _, h, w = x.shape
    rows = []  # per image: affine map of the output grid into the crop, the crop's edge-pixel centres, brightness
    for seed in seeds:
        top, left, ch, cw, flip, bright = view_params(seed, h, w, min_scale)
        rows.append([(-1 if flip else 1) * cw / w, 0, (2 * left + cw) / w - 1, 0, ch / h, (2 * top + ch) / h - 1,
                     (2 * left + 1) / w - 1, (2 * top + 1) / h - 1,
                     (2 * (left + cw) - 1) / w - 1, (2 * (top + ch) - 1) / h - 1, bright])  # fmt: skip
    params = to_device(torch.tensor(rows, dtype=torch.float64), x.device, x.dtype)
    theta, lo, hi, gain = params[:, :6].view(b, 2, 3), params[:, 6:8], params[:, 8:10], params[:, 10]
    with torch.autocast(x.device.type, enabled=False):  # affine_grid is a bmm: under autocast it would be bf16
        grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
        grid = torch.maximum(torch.minimum(grid, hi[:, None, None]), lo[:, None, None])
        views = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return views * gain.view(b, 1, 1, 1)


class SSLView:
    """Self-supervised proxy: 1 - cos(z(x), stopgrad z(aug_i(x))), aug_i seeded by the image's index."""

    name = "ssl_view"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.settings = {"seed": seed, "view": "seeded resized crop (scale 0.5-1), flip, brightness 0.8-1.2"}

    def __call__(self, model: LoadedModel, x: torch.Tensor, index: torch.Tensor, pause: Pause = nullcontext):
        z = model.embed(x)
        with torch.no_grad(), pause():
            views = seeded_views(x.detach(), [self.seed * 1_000_003 + int(i) for i in index])
            target = model.embed(views)
        return 1 - F.cosine_similarity(z.float(), target.float(), dim=-1)
