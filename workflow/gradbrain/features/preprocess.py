"""Images to the model's input: resize, centre crop and normalise a batch of uint8 images on their device."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from gradbrain.models.model import Preprocessing


def preprocess(images: np.ndarray | torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 (B,H,W,3) -> normalised float (B,3,S,S) on the images' device.

    ``shortest``: the short side to S/crop_pct, centre crop S; ``squash``: both sides to S/crop_pct, centre crop S.
    """
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    x = x.permute(0, 3, 1, 2).float() / 255.0
    size = prep.input_size
    short = int(round(size / prep.crop_pct))
    h, w = x.shape[-2:]
    if prep.resize_mode == "squash":
        new = (short, short)
    elif prep.resize_mode == "shortest":
        scale = short / min(h, w)
        new = (max(size, round(h * scale)), max(size, round(w * scale)))
    else:
        raise ValueError(f"preprocessing resize_mode '{prep.resize_mode}' is not one of shortest, squash")
    if new != (h, w):
        mode = "bicubic" if prep.interpolation == "bicubic" else "bilinear"
        x = F.interpolate(x, size=new, mode=mode, align_corners=False, antialias=True).clamp(0, 1)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    mean, std = _channel_stats(tuple(prep.mean), tuple(prep.std), x.device)
    return (x - mean) / std


@functools.lru_cache(maxsize=16)
def _channel_stats(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalisation constants on ``device``, copied once (a host-to-device copy per batch would stall the queue)."""
    return tuple(torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1).to(device) for v in (mean, std))
