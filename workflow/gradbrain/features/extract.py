"""Activations, per-image gradients and the learning-rule kinds of the sampled layers, pooled, written to zarr.

g_l(x_i) = dL_i/dh_l(x_i), h_l the output of block l; one backward pass of sum_i L_i per batch gives every image its
own gradient because L_i depends on image i alone (docs/metrics.md). Further kinds (``extraction.kinds``) come from the
same forward pass: a learning rule (features/rules.py) adds its error signal to :func:`batch_features`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from gradbrain import store
from gradbrain.features.capture import Capture, pool, pooled_tokens
from gradbrain.features.kinds import ACTIVATIONS, BASE_KINDS, GRADIENTS, check_kinds, is_placebo
from gradbrain.features.loader import ImageBatches, image_loader
from gradbrain.features.placebo import Placebos
from gradbrain.features.preprocess import preprocess
from gradbrain.features.resume import resumable, signature, signature_parts
from gradbrain.features.rules import RuleSet
from gradbrain.models.model import LoadedModel, Preprocessing

log = logging.getLogger(__name__)


def make_rules(model: LoadedModel, kinds: Sequence[str] = BASE_KINDS, seed: int = 0, sketch_size: int = 16):
    """The learning-rule kinds of ``kinds`` for ``model`` (a rules.RuleSet), or None for the default kinds."""
    if check_kinds(kinds) == BASE_KINDS:
        return None
    return RuleSet(model, kinds, seed=seed, sketch_size=sketch_size)


def batch_features(
    model: LoadedModel,
    objective: Callable,
    x: torch.Tensor,
    index: torch.Tensor,
    capture: Capture,
    rules: RuleSet | None = None,
    autocast: str | None = None,
    placebos: Placebos | None = None,
) -> dict[str, list[torch.Tensor]]:
    """Per kind, the pooled features of every sampled layer for one batch (lists over layers of (B, D)).

    One forward pass of the objective, one backward pass of sum_i L_i to the block outputs (the gradients) and to
    the ``rules``' targets, one more per placebo objective (features/placebo.py, keys ``placebos/<j>``) and per
    feedback kind; pooling and the rules' own arithmetic run outside autocast.
    """
    pooling = model.spec["pooling"]
    n_layers = len(model.layer_indices)
    x = x.detach().requires_grad_(True)
    ctx = torch.autocast(x.device.type, dtype=getattr(torch, autocast)) if autocast else nullcontext()
    capture.take()
    if rules is not None:
        rules.reset()
    n_placebos = placebos.count if placebos is not None else 0
    with torch.enable_grad(), ctx:
        with placebos.recording() if n_placebos else nullcontext():
            losses = objective(model, x, index, capture.paused)
        outputs = capture.take()
        if len(outputs) != n_layers:
            raise RuntimeError(
                f"captured {len(outputs)} block outputs for {n_layers} sampled layers; "
                "a block ran more than once per forward pass"
            )
        total = losses.sum()
        targets = rules.targets() if rules is not None else []
        retain = rules is not None and rules.retain_graph
        grads = torch.autograd.grad(total, outputs + targets, retain_graph=retain or bool(n_placebos))
        placebo = placebos.gradients(objective, x, index, capture.paused, outputs, retain) if n_placebos else []
        feedback = rules.feedback_gradients(total, outputs) if rules is not None else {}
    prefix = model.prefix_tokens
    out = {
        ACTIVATIONS: [pool(h.detach(), pooling, prefix) for h in outputs],
        GRADIENTS: [pool(g, pooling, prefix) for g in grads[:n_layers]],
    }
    keys = placebos.keys if n_placebos else []
    placebo_out = {key: [pool(g, pooling, prefix) for g in gs] for key, gs in zip(keys, placebo, strict=True)}
    if rules is None:
        return out | placebo_out
    out.update({kind: [pool(g, pooling, prefix) for g in fb] for kind, fb in feedback.items()})
    out.update(rules.features(outputs, grads[n_layers:], lambda h: pool(h, pooling, prefix)))
    rules.reset()
    return {kind: out[kind] for kind in rules.kinds} | placebo_out


def halving_on_oom(
    model: LoadedModel,
    objective: Callable,
    x: torch.Tensor,
    index: torch.Tensor,
    capture: Capture,
    rules: RuleSet | None = None,
    autocast: str | None = None,
    placebos: Placebos | None = None,
) -> dict[str, list[torch.Tensor]]:
    """:func:`batch_features`, retried in halves (down to one image) where the device runs out of memory.

    Losses are per image, so the halves give the features of the whole batch; the allocator's cache is emptied
    before each retry, and each split is logged.
    """
    try:
        return batch_features(model, objective, x, index, capture, rules, autocast, placebos)
    except torch.OutOfMemoryError:
        if len(x) == 1:
            raise
    # outside the except block, so the failed pass's tensors (held by the traceback) are freed before the retry
    capture.take()
    if rules is not None:
        rules.reset()
    if x.device.type == "cuda":
        torch.cuda.empty_cache()
    half = (len(x) + 1) // 2
    log.warning("out of device memory on a batch of %d images (from image %d): retrying as %d + %d",
                len(x), int(index[0]), half, len(x) - half)  # fmt: skip
    parts = [halving_on_oom(model, objective, x[s], index[s], capture, rules, autocast, placebos)
             for s in (slice(0, half), slice(half, None))]  # fmt: skip
    return {kind: [torch.cat(pair) for pair in zip(*(p[kind] for p in parts), strict=True)] for kind in parts[0]}


@contextmanager
def exact_float32(autocast: str | None) -> Iterator[None]:
    """Without autocast, IEEE float32 on CUDA: TF32 off for cuDNN convolutions and cuBLAS matrix products.

    PyTorch lets cuDNN convolutions use TF32 by default (a 10-bit mantissa): on an H200 that put fp32 features 3e-4
    (ViT patch embedding) to 7e-4 (ConvNeXt) from the CPU's (benchmarks/RESULTS.md, 2026-12-04). With autocast
    (bf16) the flags are left as they are. Restored on exit.
    """
    if autocast:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def iter_features(
    model: LoadedModel,
    objective: Callable,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: str = "cpu",
    autocast: str | None = None,
    rules: Any = None,
    placebos: Placebos | None = None,
) -> Iterator[tuple[torch.Tensor, dict[str, list[np.ndarray]]]]:
    """Per batch of (images, indices): the indices and, per kind, the float32 features of every sampled layer.

    Images are uint8 (preprocessed here, on the device) or already preprocessed. ``rules`` (a
    rules.RuleSet, see :func:`make_rules`) adds the learning-rule kinds, ``placebos`` the placebo gradients. A
    batch that runs out of device memory is split in halves (:func:`halving_on_oom`). On CUDA nothing waits per layer:
    a batch's pooled outputs leave the device in one non-blocking copy, and the batch is handed out only once the
    next one is queued, so the host's work (storing, decoding) overlaps the device's. Without ``autocast`` the
    arithmetic is IEEE float32 (:func:`exact_float32`).
    """
    capture = Capture(model.sampled_blocks)
    cuda = str(device).startswith("cuda")
    pending = None
    try:
        with rules.attached() if rules else nullcontext(), exact_float32(autocast):
            for x, idx in batches:
                x = x.to(device, non_blocking=True)
                if x.dtype == torch.uint8:
                    x = preprocess(x, model.preprocessing)
                if model.extra.get("channels_last"):
                    x = x.contiguous(memory_format=torch.channels_last)
                feats = halving_on_oom(model, objective, x, idx, capture, rules, autocast, placebos)
                dims = {kind: [t.shape[1] for t in values] for kind, values in feats.items()}
                flat = torch.cat([t.float() for values in feats.values() for t in values], dim=1)
                host = flat.to("cpu", non_blocking=cuda)
                event = torch.cuda.Event() if cuda else None
                if event is not None:
                    event.record()
                if pending is not None:
                    yield _unpack(*pending)
                pending = (idx, host, event, dims)
            if pending is not None:
                yield _unpack(*pending)
    finally:
        capture.remove()


def _unpack(idx, host, event, dims: dict[str, list[int]]) -> tuple[torch.Tensor, dict[str, list[np.ndarray]]]:
    if event is not None:
        event.synchronize()
    sizes = [d for kind_dims in dims.values() for d in kind_dims]
    parts = np.split(host.numpy(), np.cumsum(sizes)[:-1], axis=1)
    out, start = {}, 0
    for kind, kind_dims in dims.items():
        out[kind] = parts[start : start + len(kind_dims)]
        start += len(kind_dims)
    return idx, out


def _prepare_partial(
    path: Path,
    model: LoadedModel,
    objective,
    ids: Sequence[str],
    dims: dict[str, list[int]],
    settings: dict,
    rules=None,
) -> zarr.Group:
    """The partial store to write into: the one at ``path`` if it may be resumed (features/resume.py), else new."""
    parts = signature_parts(model, objective, ids, settings)
    group = resumable(path, parts)
    if group is not None:
        return group
    group = zarr.open_group(str(path), mode="w")
    chunk, dtype = int(settings["chunk_images"]), settings["store_dtype"]
    for kind, kind_dims in dims.items():
        sub = group.create_group(kind)
        for name, depth, dim in zip(model.layer_names, model.depths, kind_dims, strict=True):
            arr = store.create_array(sub, name, shape=(len(ids), dim), chunks=(chunk, dim), dtype=dtype)
            arr.attrs.update({"layer": name, "relative_depth": depth, "kind": kind})
    store.write_array(group, "stimulus_id", np.asarray(ids))
    group.attrs.update(
        {
            "signature": signature(parts),
            "signature_parts": parts,
            "weights_sha256": parts["weights"],
            "n_done": 0,
            "model": model.spec["name"],
            "layers": model.layer_names,
            "relative_depths": model.depths,
            "pooling": model.spec["pooling"],
            "pooled_tokens": pooled_tokens(model.spec["pooling"], model.prefix_tokens, model.class_token),
            "prefix_tokens": model.prefix_tokens,
            "objective": model.spec["objective"],
            "preprocessing": model.preprocessing.as_dict(),
            "weights_id": model.weights_id,
            "source": model.spec["source"],
            "arch": model.spec["arch"],
            "kinds": [k for k in dims if not is_placebo(k)],
            "placebos": sum(is_placebo(k) for k in dims),
            **_rule_attrs(rules),
        }
    )
    return group


def _feature_dims(
    model: LoadedModel, objective, prep: Preprocessing, device: str, rules=None, placebos=None
) -> dict[str, list[int]]:
    x = torch.zeros(1, 3, prep.input_size, prep.input_size, device=device)
    capture = Capture(model.sampled_blocks)
    try:
        with rules.attached() if rules else nullcontext():
            feats = batch_features(
                model, objective, x, torch.zeros(1, dtype=torch.long), capture, rules, None, placebos
            )
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
    pca_components: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    kinds: Sequence[str] = BASE_KINDS,
    rule_seed: int = 0,
    sketch_size: int = 16,
    placebos: int = 0,
) -> Path:
    """Extract every stimulus and write ``out``; an interrupted run resumes from the last complete chunk.

    Work happens in ``<out>.partial`` (unknown to Snakemake, so it survives a killed job), resumed only when it was
    written with the same model, weights, settings and stimuli (features/resume.py); the finished store is renamed
    to ``out``. Chunks are multiples of the batch size so a chunk is complete once its batches are.
    ``pca_components``: each kind and layer is replaced by its first principal components, fitted on these stimuli
    (gradbrain.pca; the raw store stays in ``.partial`` until the reduced one is complete).
    ``kinds`` beyond activations and gradients add learning-rule kinds (features/rules.py), seeded by ``rule_seed``,
    and ``placebos`` placebo gradients (features/placebo.py, also seeded by ``rule_seed``) under ``placebos/<j>``.
    """
    out = Path(out)
    chunk_images = max(batch_size, chunk_images // batch_size * batch_size)
    settings = {
        "batch_size": batch_size,
        "chunk_images": chunk_images,
        "store_dtype": store_dtype,
        "autocast": autocast,
        "device": torch.device(device).type,
    }
    rules = make_rules(model, kinds, rule_seed, sketch_size)
    if rules:
        settings["rules"] = {"kinds": list(rules.kinds), "seed": rule_seed, "sketch_size": sketch_size}
    placebo = Placebos(model, placebos, rule_seed) if placebos else None
    if placebo:
        settings["placebos"] = {"count": int(placebos), "seed": rule_seed}
    partial = out.with_name(out.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    dims = _feature_dims(model, objective, model.preprocessing, device, rules, placebo)
    group = _prepare_partial(partial, model, objective, ids, dims, settings, rules)
    group.attrs["objective_settings"] = json.loads(json.dumps(getattr(objective, "settings", {}), default=str))
    start = int(group.attrs["n_done"])
    if start:
        log.info("resuming %s at image %d of %d", out, start, len(ids))
    arrays = {kind: [group[kind][name] for name in model.layer_names] for kind in dims}
    loader = image_loader(read, ids[start:], model.preprocessing, batch_size, num_workers, device)
    batches = ((x, idx + start) for x, idx in loader)
    buffers: dict[str, list[list[np.ndarray]]] = {k: [[] for _ in model.layer_names] for k in dims}
    done, t0 = start, time.time()
    for idx, feats in iter_features(model, objective, batches, device, autocast, rules, placebo):
        for kind, values in feats.items():
            for buf, v in zip(buffers[kind], values, strict=True):
                buf.append(v)
        done = int(idx[-1]) + 1
        if done % chunk_images == 0 or done == len(ids):
            lo = done - sum(len(b) for b in buffers["activations"][0])
            for kind in dims:
                for arr, buf in zip(arrays[kind], buffers[kind], strict=True):
                    arr[lo:done] = np.concatenate(buf).astype(store_dtype)
                    buf.clear()
            group.attrs["n_done"] = done
        if progress:
            progress(done, len(ids))
    rate = (done - start) / max(time.time() - t0, 1e-9)
    group.attrs.update({"n_done": done, "images_per_second": rate, "complete": True})
    if pca_components:
        from gradbrain.features.pca import reduce_store

        reduced = out.with_name(out.name + ".pca.partial")
        reduce_store(partial, reduced, int(pca_components), device=device)
        if out.exists():
            shutil.rmtree(out)
        reduced.rename(out)
        shutil.rmtree(partial)
        return out
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


def extract_arrays(
    model: LoadedModel,
    objective: Callable,
    images: np.ndarray,
    batch_size: int = 100,
    device: str = "cpu",
    kinds: Sequence[str] = BASE_KINDS,
    rule_seed: int = 0,
    sketch_size: int = 16,
    placebos: int = 0,
) -> dict[str, list[np.ndarray]]:
    """In-memory extraction of uint8 images: per kind (and ``placebos/<j>``), a list over sampled layers of
    (n_images, d) float32."""
    rules = make_rules(model, kinds, rule_seed, sketch_size)
    placebo = Placebos(model, placebos, rule_seed) if placebos else None
    kinds = (rules.kinds if rules else BASE_KINDS) + tuple(placebo.keys if placebo else ())
    out: dict[str, list[list[np.ndarray]]] = {k: [[] for _ in model.layer_names] for k in kinds}
    data = ImageBatches(
        lambda ids: images[np.asarray(ids, dtype=int)], range(len(images)), model.preprocessing, batch_size
    )
    batches = (data[b] for b in range(len(data)))
    for _, feats in iter_features(model, objective, batches, device, rules=rules, placebos=placebo):
        for kind, values in feats.items():
            for buf, v in zip(out[kind], values, strict=True):
                buf.append(v)
    return {kind: [np.concatenate(b) for b in bufs] for kind, bufs in out.items()}
