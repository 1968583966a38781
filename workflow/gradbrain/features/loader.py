"""Stimuli in batches: decoded (and, on the CPU, preprocessed) by DataLoader workers ahead of the model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from gradbrain.features.preprocess import preprocess
from gradbrain.models.model import Preprocessing


class ImageBatches(torch.utils.data.Dataset):
    """Batches of stimuli read by ``read(ids) -> uint8`` (runs in DataLoader workers).

    ``decode_only``: yield the decoded uint8 images (B,H,W,3), preprocessed later on the model's device (GPU runs:
    the workers only decode); otherwise yield them preprocessed (CPU runs: the workers resize too).
    """

    def __init__(self, read: Callable[[Sequence[str]], np.ndarray], ids: Sequence[str], prep: Preprocessing, bs: int,
                 decode_only: bool = False):  # fmt: skip
        self.read, self.ids, self.prep, self.bs, self.decode_only = read, list(ids), prep, bs, decode_only

    def __len__(self) -> int:
        return (len(self.ids) + self.bs - 1) // self.bs

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = b * self.bs, min((b + 1) * self.bs, len(self.ids))
        images = self.read(self.ids[lo:hi])
        if self.decode_only:
            return torch.from_numpy(np.ascontiguousarray(images)), torch.arange(lo, hi)
        return preprocess(images, self.prep), torch.arange(lo, hi)


def image_loader(
    read: Callable[[Sequence[str]], np.ndarray],
    ids: Sequence[str],
    prep: Preprocessing,
    batch_size: int,
    num_workers: int = 0,
    device: str = "cpu",
    decode_only: bool | None = None,
) -> torch.utils.data.DataLoader:
    """Batches in stimulus order, decoded by ``num_workers`` processes ahead of the model (pinned memory on CUDA).

    Each worker holds its own file handles (the readers open them lazily per process); the DataLoader returns the
    batches in index order whatever the number of workers. Off the CPU, workers only decode (``decode_only``) and
    the model's device resizes and normalises.
    """
    if decode_only is None:
        decode_only = not str(device).startswith("cpu")
    return torch.utils.data.DataLoader(
        ImageBatches(read, ids, prep, batch_size, decode_only=decode_only),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=str(device).startswith("cuda"),
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )
