"""Randomized PCA (Halko, Martinsson & Tropp 2011) of extracted features, in torch so that it runs on the GPU.

Fitted per kind and layer on the stimuli of the features store (the images whose responses are modelled, nothing
else). The reduced store keeps the layout of the raw one (``<kind>/<layer>``: (n_images, k) scores), so the
encoding reads it unchanged, and keeps each basis under ``pca/<kind>/<layer>`` (components, mean, explained
variance) so the scores can be mapped back (docs/decisions.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import zarr

from gradbrain import store
from gradbrain.features.kinds import placebo_key


class PCAFit(NamedTuple):
    mean: torch.Tensor  # (d,)
    components: torch.Tensor  # (k, d), orthonormal rows
    explained_variance: torch.Tensor  # (k,)
    explained_variance_ratio: torch.Tensor  # (k,)
    scores: torch.Tensor  # (n, k) = (X - mean) @ components.T


def randomized_pca(
    x: torch.Tensor, k: int, oversample: int = 10, n_iter: int = 4, seed: int = 0, dtype=torch.float64
) -> PCAFit:
    """First ``k`` principal components of the rows of ``x`` (n, d) by a randomized range finder with ``n_iter``
    power iterations (QR-orthonormalised, as scikit-learn's ``randomized_svd``) and an exact SVD of the small
    projection. Signs are fixed like scikit-learn's PCA: each component's largest absolute loading is positive.
    """
    x = x.to(dtype)
    n, d = x.shape
    k = min(k, n, d)
    mean = x.mean(0)
    xc = x - mean
    width = min(k + oversample, n, d)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn(d, width, generator=gen, dtype=dtype).to(x.device)
    q = torch.linalg.qr(xc @ omega).Q
    for _ in range(n_iter):
        q = torch.linalg.qr(xc.T @ q).Q
        q = torch.linalg.qr(xc @ q).Q
    u_small, s, vt = torch.linalg.svd(q.T @ xc, full_matrices=False)
    vt, s = vt[:k], s[:k]
    signs = torch.sign(vt.gather(1, vt.abs().argmax(1, keepdim=True))).squeeze(1)
    signs[signs == 0] = 1
    vt = vt * signs[:, None]
    var = s**2 / max(n - 1, 1)
    total = (xc**2).sum() / max(n - 1, 1)
    return PCAFit(mean, vt, var, var / total, xc @ vt.T)


def reduce_store(src: str | Path, dst: str | Path, k: int, device: str = "cpu", seed: int = 0) -> Path:
    """Write ``dst``: the features store ``src`` with every kind/layer replaced by its first ``k`` PCA scores."""
    src_group = zarr.open_group(str(src), mode="r")
    attrs = dict(src_group.attrs)
    dst = Path(dst)
    group = zarr.open_group(str(dst), mode="w")
    store.write_array(group, "stimulus_id", store.read_array(src_group, "stimulus_id"))
    kept = {}
    for kind in [*attrs["kinds"], *(placebo_key(j) for j in range(int(attrs.get("placebos", 0))))]:
        sub, basis = group.create_group(kind), group.require_group("pca").create_group(kind)
        for layer in attrs["layers"]:
            raw = src_group[kind][layer]
            fit = randomized_pca(torch.from_numpy(np.asarray(raw[...], dtype=np.float32)).to(device), k, seed=seed)
            scores = fit.scores.float().cpu().numpy().astype(raw.dtype)
            arr = store.create_array(sub, layer, shape=scores.shape, chunks=(raw.chunks[0], scores.shape[1]),
                                     dtype=raw.dtype)  # fmt: skip
            arr[...] = scores
            arr.attrs.update({**raw.attrs, "pca_components": scores.shape[1], "raw_dim": raw.shape[1]})
            lb = basis.create_group(layer)
            for name in ("components", "mean", "explained_variance", "explained_variance_ratio"):
                store.write_array(lb, name, getattr(fit, name).float().cpu().numpy())
            kept[f"{kind}/{layer}"] = float(fit.explained_variance_ratio.sum())
    group.attrs.update({**attrs, "pca_components": int(k), "pca_seed": seed, "pca_explained_variance": kept,
                        "features": f"randomized PCA scores (first {k} components per kind and layer)"})  # fmt: skip
    return dst
