"""Images to the model's input: the model's own eval transform, on a batch of uint8 images on their device.

The transforms reproduced are timm's ``create_transform(**resolve_data_config(model=...))`` at eval and open_clip's
``image_transform(is_train=False)``, both torchvision on PIL images:

- ``shortest`` (timm ``crop_mode="center"``, open_clip ``resize_mode="shortest"``): the short side to
  ``floor(S / crop_pct)``, the long side to ``int(short * long / short_in)`` (torchvision truncates), then a centre
  crop S x S at offsets ``int(round((side - S) / 2))`` (torchvision's CenterCrop, Python's round).
- ``squash`` (timm ``crop_mode="squash"``, open_clip ``resize_mode="squash"``): both sides to ``floor(S / crop_pct)``,
  then the same centre crop.

PIL's bicubic and bilinear resizes antialias (the filter widened by the downscale factor, bicubic a = -0.5);
``F.interpolate(..., antialias=True)`` is the same filter, computed in float where PIL rounds to uint8 after each of
its two passes. The result is rounded to the 8-bit grid as PIL's output is; the remaining difference is at most one
grey level (tests/features/test_preprocess.py, docs/decisions.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from gradbrain.models.model import Preprocessing

RESIZE_MODES = ("shortest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear")


def resized_shape(h: int, w: int, prep: Preprocessing) -> tuple[int, int]:
    """(height, width) after the resize of an h x w image, as torchvision's Resize computes it."""
    scale = math.floor(prep.input_size / prep.crop_pct)
    if prep.resize_mode == "squash":
        return scale, scale
    if prep.resize_mode != "shortest":
        raise ValueError(f"preprocessing resize_mode '{prep.resize_mode}' is not one of {RESIZE_MODES}")
    long = int(scale * max(h, w) / min(h, w))
    return (scale, long) if h <= w else (long, scale)


def crop_offsets(h: int, w: int, size: int) -> tuple[int, int]:
    """(top, left) of torchvision's CenterCrop of ``size`` in an h x w image."""
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def preprocess(images: np.ndarray | torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 (B,H,W,3) -> normalised float (B,3,S,S) on the images' device (resize, centre crop, normalise)."""
    if prep.interpolation not in INTERPOLATIONS:
        raise ValueError(f"preprocessing interpolation '{prep.interpolation}' is not one of {INTERPOLATIONS}")
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    x = x.permute(0, 3, 1, 2).float()
    size = prep.input_size
    h, w = x.shape[-2:]
    new = resized_shape(h, w, prep)
    if min(new) < size:
        raise ValueError(f"preprocessing crop_pct {prep.crop_pct} > 1 would pad the crop; use a crop_pct of at most 1")
    for shape in ((h, new[1]), new):  # PIL's two passes: the width, then the height, each rounded to uint8
        if shape != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=shape, mode=prep.interpolation, align_corners=False, antialias=True)
            x = x.round().clamp(0, 255)
    top, left = crop_offsets(new[0], new[1], size)
    x = x[:, :, top : top + size, left : left + size] / 255.0
    mean, std = _channel_stats(tuple(prep.mean), tuple(prep.std), x.device)
    return (x - mean) / std


@functools.lru_cache(maxsize=16)
def _channel_stats(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalisation constants on ``device``, copied once (a host-to-device copy per batch would stall the queue)."""
    return tuple(torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1).to(device) for v in (mean, std))
