"""Brief training of the embedded default's small models (no pretrained weights can be downloaded offline).

Random-init ViTs have nearly identical block outputs, so planted layers are poorly recovered from them (on 2,000
crops at 96 px, a random-init ViT-tiny located the planted layer of its activations with r about 0.4, the same model
after 60 s of training with r 0.67-0.84); a minute of training on a real task breaks that symmetry.
Task: name the photograph that a crop came from.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gradbrain.features.preprocess import preprocess
from gradbrain.models.load import load_model
from gradbrain.simulation.photos import crops

log = logging.getLogger(__name__)


def train_demo_model(
    spec: dict[str, Any],
    out: str | Path,
    *,
    n_images: int = 2000,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    image_size: int = 64,
) -> dict[str, float]:
    """Train ``spec``'s architecture from scratch on photograph crops and save its state dict to ``out``."""
    torch.manual_seed(seed)
    spec = {"n_layers": 1000, "pooling": "mean", "objective": "ce_pseudo", **spec, "weights": {"demo": False}}
    model = load_model(spec)
    net = model.module
    images, labels = crops(n_images, image_size, seed=10_000 + seed)  # a stream disjoint from the stimuli's seeds
    x_all = preprocess(images, model.preprocessing)
    y_all = torch.from_numpy(labels)
    n_val = n_images // 10
    net.train().requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((n_images - n_val) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for epoch in range(epochs):
        order = torch.randperm(n_images - n_val, generator=gen) + n_val
        for b in range(steps // epochs):
            idx = order[b * batch_size : (b + 1) * batch_size]
            loss = F.cross_entropy(net(x_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        log.info("%s epoch %d/%d loss %.3f (%.0f s)", spec["name"], epoch + 1, epochs, loss.item(), time.time() - t0)
    net.eval()
    with torch.no_grad():
        acc = float((net(x_all[:n_val]).argmax(1) == y_all[:n_val]).float().mean())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out)
    stats = {"validation_accuracy": acc, "chance": 1 / len(np.unique(labels)), "seconds": time.time() - t0}
    log.info("%s: validation accuracy %.2f (chance %.2f)", spec["name"], acc, stats["chance"])
    return stats
