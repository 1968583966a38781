"""Activations and per-image gradients of the sampled layers, pooled, written to zarr with resume.

g_l(x_i) = dL_i/dh_l(x_i), h_l the output of block l; one backward pass of sum_i L_i per batch (DESIGN.md).
Further kinds (alternative learning rules, ``extraction.kinds``) come from the same forward pass: learning_rules.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import zarr

from . import store
from .models import LoadedModel, Preprocessing

log = logging.getLogger(__name__)
KINDS = ("activations", "gradients")


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


def preprocess(images: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """uint8 (B,H,W,3) -> normalised float (B,3,S,S): resize the short side to S/crop_pct, centre crop S."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    size = prep.input_size
    short = int(round(size / prep.crop_pct))
    h, w = x.shape[-2:]
    scale = short / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    if new != (h, w):
        mode = "bicubic" if prep.interpolation == "bicubic" else "bilinear"
        x = F.interpolate(x, size=new, mode=mode, align_corners=False, antialias=True).clamp(0, 1)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    return (x - mean) / std


def extract_batch(
    model: LoadedModel,
    objective: Callable,
    x: torch.Tensor,
    index: torch.Tensor,
    capture: Capture,
    autocast: str | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Pooled activations and gradients of every sampled layer for one batch (lists over layers of (B, D))."""
    pooling = model.spec["pooling"]
    x = x.detach().requires_grad_(True)
    ctx = (
        torch.autocast(x.device.type, dtype=getattr(torch, autocast)) if autocast else nullcontext()
    )
    capture.take()
    with torch.enable_grad(), ctx:
        losses = objective(model, x, index, capture.paused)
        outputs = capture.take()
        if len(outputs) != len(model.layer_indices):
            raise RuntimeError(
                f"captured {len(outputs)} block outputs for {len(model.layer_indices)} sampled layers; "
                "a block ran more than once per forward pass"
            )
        grads = torch.autograd.grad(losses.sum(), outputs)
    return [pool(h.detach(), pooling) for h in outputs], [pool(g, pooling) for g in grads]


def make_rules(model: LoadedModel, kinds: Sequence[str] = KINDS, seed: int = 0, sketch_size: int = 16):
    """The learning-rule kinds of ``kinds`` for ``model`` (a learning_rules.RuleSet), or None for the default kinds."""
    from .learning_rules import RuleSet, check_kinds

    if check_kinds(kinds) == KINDS:
        return None
    return RuleSet(model, kinds, seed=seed, sketch_size=sketch_size)


def batch_features(model, objective, x, index, capture, rules=None, autocast=None) -> dict[str, list[torch.Tensor]]:
    """Per kind, the pooled features of every sampled layer for one batch (extract_batch, or the rule kinds too)."""
    if rules is None:
        return dict(zip(KINDS, extract_batch(model, objective, x, index, capture, autocast)))
    from .learning_rules import extract_batch_kinds

    return extract_batch_kinds(model, objective, x, index, capture, rules, autocast)


class ImageBatches(torch.utils.data.Dataset):
    """Batches of preprocessed stimuli read by ``read(ids) -> uint8``; runs in DataLoader workers."""

    def __init__(self, read: Callable[[Sequence[str]], np.ndarray], ids: Sequence[str], prep: Preprocessing, bs: int):
        self.read, self.ids, self.prep, self.bs = read, list(ids), prep, bs

    def __len__(self) -> int:
        return (len(self.ids) + self.bs - 1) // self.bs

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = b * self.bs, min((b + 1) * self.bs, len(self.ids))
        return preprocess(self.read(self.ids[lo:hi]), self.prep), torch.arange(lo, hi)


def signature(model: LoadedModel, ids: Sequence[str], settings: dict[str, Any]) -> str:
    """Hash of everything that determines the features, so a resumed run never mixes two configurations."""
    h = hashlib.sha256()
    h.update(json.dumps([model.spec, model.weights_id, settings], sort_keys=True, default=str).encode())
    h.update("\n".join(ids).encode())
    return h.hexdigest()


def _prepare_partial(path: Path, model: LoadedModel, ids: Sequence[str], dims: dict[str, list[int]], settings: dict,
                     rules=None) -> zarr.Group:
    sig = signature(model, ids, settings)
    if path.exists():
        group = zarr.open_group(str(path), mode="r+")
        if group.attrs.get("signature") == sig:
            return group
        shutil.rmtree(path)
    group = zarr.open_group(str(path), mode="w")
    chunk = int(settings["chunk_images"])
    for kind, kind_dims in dims.items():
        sub = group.create_group(kind)
        for name, depth, dim in zip(model.layer_names, model.depths, kind_dims):
            arr = sub.create_array(name, shape=(len(ids), dim), chunks=(chunk, dim), dtype=settings["store_dtype"])
            arr.attrs.update({"layer": name, "relative_depth": depth, "kind": kind})
    store.write_array(group, "stimulus_id", np.asarray(ids))
    group.attrs.update(
        {
            "signature": sig,
            "n_done": 0,
            "model": model.spec["name"],
            "layers": model.layer_names,
            "relative_depths": model.depths,
            "pooling": model.spec["pooling"],
            "objective": model.spec["objective"],
            "preprocessing": model.preprocessing.as_dict(),
            "weights_id": model.weights_id,
            "source": model.spec["source"],
            "arch": model.spec["arch"],
            "kinds": list(dims),
            **_rule_attrs(rules),
        }
    )
    return group


def _feature_dims(model: LoadedModel, objective, prep: Preprocessing, device: str, rules=None) -> dict[str, list[int]]:
    x = torch.zeros(1, 3, prep.input_size, prep.input_size, device=device)
    capture = Capture(model.sampled_blocks)
    try:
        with rules.attached() if rules else nullcontext():
            feats = batch_features(model, objective, x, torch.zeros(1, dtype=torch.long), capture, rules)
    finally:
        capture.remove()
    return {kind: [a.shape[1] for a in values] for kind, values in feats.items()}


def extract_to_zarr(
    model: LoadedModel,
    objective: Callable,
    read: Callable[[Sequence[str]], np.ndarray],
    ids: Sequence[str],
    out: str | Path,
    *,
    batch_size: int = 64,
    chunk_images: int = 256,
    device: str = "cpu",
    store_dtype: str = "float32",
    autocast: str | None = None,
    num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
    kinds: Sequence[str] = KINDS,
    rule_seed: int = 0,
    sketch_size: int = 16,
) -> Path:
    """Extract every stimulus and write ``out``; an interrupted run resumes from the last complete chunk.

    Work happens in ``<out>.partial`` (unknown to Snakemake, so it survives a killed job); the finished store is
    renamed to ``out``. Chunks are multiples of the batch size so a chunk is complete once its batches are.
    ``kinds`` beyond activations and gradients add learning-rule kinds (learning_rules.py), seeded by ``rule_seed``.
    """
    out = Path(out)
    chunk_images = max(batch_size, chunk_images // batch_size * batch_size)
    settings = {"batch_size": batch_size, "chunk_images": chunk_images, "store_dtype": store_dtype,
                "autocast": autocast}
    rules = make_rules(model, kinds, rule_seed, sketch_size)
    if rules:
        settings["rules"] = {"kinds": list(rules.kinds), "seed": rule_seed, "sketch_size": sketch_size}
    partial = out.with_name(out.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    dims = _feature_dims(model, objective, model.preprocessing, device, rules)
    group = _prepare_partial(partial, model, ids, dims, settings, rules)
    start = int(group.attrs["n_done"])
    if start:
        log.info("resuming %s at image %d of %d", out, start, len(ids))
    arrays = {kind: [group[kind][name] for name in model.layer_names] for kind in dims}
    data = ImageBatches(read, ids[start:], model.preprocessing, batch_size)
    loader = torch.utils.data.DataLoader(
        data, batch_size=None, shuffle=False, num_workers=num_workers, persistent_workers=False
    )
    capture = Capture(model.sampled_blocks)
    if rules:
        rules.attach()
    buffers: dict[str, list[list[np.ndarray]]] = {k: [[] for _ in model.layer_names] for k in dims}
    done, t0 = start, time.time()
    try:
        for x, idx in loader:
            idx = idx + start
            feats = batch_features(model, objective, x.to(device), idx, capture, rules, autocast)
            for kind, values in feats.items():
                for buf, v in zip(buffers[kind], values):
                    buf.append(v.float().cpu().numpy())
            done = int(idx[-1]) + 1
            if done % chunk_images == 0 or done == len(ids):
                lo = done - sum(len(b) for b in buffers["activations"][0])
                for kind in dims:
                    for arr, buf in zip(arrays[kind], buffers[kind]):
                        arr[lo:done] = np.concatenate(buf).astype(store_dtype)
                        buf.clear()
                group.attrs["n_done"] = done
            if progress:
                progress(done, len(ids))
    finally:
        capture.remove()
        if rules:
            rules.remove()
    rate = (done - start) / max(time.time() - t0, 1e-9)
    group.attrs.update({"n_done": done, "images_per_second": rate, "complete": True})
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out


def _rule_attrs(rules) -> dict[str, Any]:
    """What the rule kinds replaced and sketched, for the store's attributes (nothing for the default kinds)."""
    if rules is None:
        return {}
    attrs: dict[str, Any] = {"rule_seed": rules.seed}
    if rules.feedback:
        attrs["feedback_modules"] = rules.summary.get("replaced", [])
        attrs["exact_backward_modules"] = rules.summary.get("exact", []) + sorted(rules.state.exact_calls)
    if "weight_gradient_sketch" in rules.kinds:
        attrs.update(sketch_size=rules.sketch_size, sketch_modules=rules.layer_modules)
    return attrs


def load_features(path: str | Path, kind: str, layer: str | None = None) -> dict[str, np.ndarray] | np.ndarray:
    """One layer (n_images, d) or all layers of one kind as a dict, as float32."""
    group = store.open_group(path)
    if kind not in group:
        raise KeyError(f"{path} has no kind '{kind}'; it has {sorted(k for k, _ in group.groups())}")
    if layer is not None:
        return np.asarray(group[kind][layer][...], dtype=np.float32)
    return {name: np.asarray(group[kind][name][...], dtype=np.float32) for name in group.attrs["layers"]}


def extract_arrays(
    model: LoadedModel, objective: Callable, images: np.ndarray, batch_size: int = 100, device: str = "cpu",
    kinds: Sequence[str] = KINDS, rule_seed: int = 0, sketch_size: int = 16,
) -> dict[str, list[np.ndarray]]:
    """In-memory extraction of uint8 images: per kind, a list over sampled layers of (n_images, d) float32."""
    rules = make_rules(model, kinds, rule_seed, sketch_size)
    kinds = rules.kinds if rules else KINDS
    out: dict[str, list[list[np.ndarray]]] = {k: [[] for _ in model.layer_names] for k in kinds}
    data = ImageBatches(lambda ids: images[np.asarray(ids, dtype=int)], range(len(images)), model.preprocessing,
                        batch_size)
    capture = Capture(model.sampled_blocks)
    if rules:
        rules.attach()
    try:
        for b in range(len(data)):
            x, idx = data[b]
            for kind, values in batch_features(model, objective, x.to(device), idx, capture, rules).items():
                for buf, v in zip(out[kind], values):
                    buf.append(v.float().cpu().numpy())
    finally:
        capture.remove()
        if rules:
            rules.remove()
    return {kind: [np.concatenate(b) for b in bufs] for kind, bufs in out.items()}
