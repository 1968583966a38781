"""Extraction speed: batched activations + per-image gradients against a naive one-image loop, in one run.

Default (GPU, one command, about 3 minutes): the DINOv3 ViT-L/16 architecture (timm `vit_large_patch16_dinov3`,
random init) at 224 px, all 24 blocks, mean-pooled activations and gradients, bf16 autocast, through the
extraction's own loop (gradbrain.features.extract.iter_features: device-side batches, one non-blocking
device-to-host copy per batch). Prints and writes (benchmarks/out/extract.json):

- images/s of the batched path and of a naive one-image loop, and their ratio;
- the share of the bf16 roofline: a bf16 GEMM is timed in the same run, and one image costs 2 x 125.7 GFLOP
  (forward 125.7, backward to the activations about the same); the ssl_view objective adds a stop-gradient forward
  of the augmented view, so its share of the work actually done is given too (`work_share`);
- the largest relative error (Frobenius, per kind and layer) of the bf16 outputs against an fp32 reference (TF32
  off) on the same images, which must be <= 1e-2;
- optionally (`--compile`) the same batched path with every block compiled (torch.compile).

On a CPU use a small stand-in, e.g.
`python benchmarks/extract.py --arch vit_small_patch16_dinov3 --size 64 --depth 6 --n 128 --batch 32 --naive 16`.
Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from gradbrain.features import extract
from gradbrain.features.objectives.ssl import SSLView
from gradbrain.models.catalogue import model_spec
from gradbrain.models.load import compile_blocks, load_model

GFLOP_FWD_VITL16 = 125.7  # per 224-px image, the figure (24 blocks, 201 tokens)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gemm_tflops(device: str, dtype: torch.dtype, n: int = 8192, reps: int = 20) -> float:
    """Dense GEMM throughput (best of three timings of ``reps`` products), the roofline's reference."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * reps / best / 1e12


class Probe:
    """L_i = <z_i, u>, u fixed: a forward and a backward pass with no objective work (the floor of any objective)."""

    name = "probe"

    def __init__(self, dim: int, device: str):
        self.u = torch.randn(dim, generator=torch.Generator().manual_seed(0)).to(device)

    def __call__(self, model, x, index, pause=None):
        z = model.embed(x).float()
        with torch.autocast(z.device.type, enabled=False):
            return z @ self.u


def run(model, objective, x: torch.Tensor, batch: int, autocast: str | None, device: str, keep: int = 0):
    """images/s of the extraction loop over ``x`` in batches, and the outputs of the first ``keep`` images."""

    def batches():
        for lo in range(0, len(x), batch):
            yield x[lo : lo + batch], torch.arange(lo, min(lo + batch, len(x)))

    for _ in extract.iter_features(model, objective, [(x[:batch], torch.arange(batch))], device, autocast):
        pass  # warm-up (kernel selection, allocator, compilation)
    sync(device)
    kept: list[list] = []
    t0 = time.perf_counter()
    for idx, feats in extract.iter_features(model, objective, batches(), device, autocast):
        if int(idx[0]) < keep:
            kept.append([torch.from_numpy(v) for v in feats["activations"] + feats["gradients"]])
    sync(device)
    rate = len(x) / (time.perf_counter() - t0)
    outs = [torch.cat(parts)[:keep] for parts in zip(*kept, strict=True)] if kept else []
    return rate, outs


def run_batched(model, objective, x, batch, autocast, device, keep):
    """``run`` with the batch halved until it fits in device memory."""
    while True:
        try:
            return (*run(model, objective, x, batch, autocast, device, keep), batch)
        except torch.OutOfMemoryError:
            if batch <= 8:
                raise
            batch //= 2
            torch.cuda.empty_cache()
            print(f"out of memory: batch {batch * 2} -> {batch}", flush=True)


def rel_errors(test: list[torch.Tensor], ref: list[torch.Tensor]) -> list[float]:
    return [
        float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))
        for a, b in zip(test, ref, strict=True)
    ]


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vit_large_patch16_dinov3")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--depth", type=int, default=None, help="override the number of blocks (CPU stand-ins)")
    p.add_argument("--n", type=int, default=2048 if cuda else 64, help="images for the batched path")
    p.add_argument("--batch", type=int, default=256 if cuda else 16)
    p.add_argument("--naive", type=int, default=48 if cuda else 8, help="images for the one-image loop")
    p.add_argument("--ref", type=int, default=32 if cuda else 8, help="images compared with the fp32 reference")
    p.add_argument("--autocast", default="bfloat16" if cuda else None)
    p.add_argument("--objective", default="ssl_view", help="ssl_view (the DINOv3 entry's) or probe")
    p.add_argument("--compile", action="store_true", help="also time the batched path with compiled blocks")
    p.add_argument("--budget-s", type=float, default=170, help="skip optional parts that would exceed this")
    p.add_argument("--out", default="benchmarks/out/extract.json")
    args = p.parse_args()
    t_start = time.perf_counter()
    device = "cuda" if cuda else "cpu"
    kwargs = {"img_size": args.size} | ({"depth": args.depth} if args.depth else {})
    spec = model_spec("bench", {"catalogue": "dinov3_vitl16", "arch": args.arch, "kwargs": kwargs,
                                "input_size": args.size, "objective": "ssl_view", "n_layers": 1000,
                                "weights": {"hub": None}})  # fmt: skip
    torch.manual_seed(0)
    model = load_model(spec, device=device)
    obj = Probe(model.module.num_features, device) if args.objective == "probe" else SSLView(0)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(args.n, 3, args.size, args.size, device=device, generator=gen)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine()),
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "arch": args.arch, "size": args.size, "blocks": len(model.blocks), "sampled_layers": len(model.layer_indices),
        "autocast": args.autocast, "objective": args.objective, "n_images": args.n,
    }  # fmt: skip
    import timm.layers

    result["timm_fused_attention"] = bool(timm.layers.use_fused_attn())
    batched, outs, batch = run_batched(model, obj, x, args.batch, args.autocast, device, args.ref)
    result |= {"batch": batch, "batched_images_per_s": batched}
    naive, _ = run(model, obj, x[: args.naive], 1, args.autocast, device)
    result |= {"naive_images_per_s": naive, "batched_over_naive": batched / naive}
    if cuda:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, False
    _, ref = run(model, obj, x[: args.ref], min(batch, args.ref), None, device, args.ref)  # fp32, same images
    errs = rel_errors(outs, ref)
    n_layers = len(model.layer_indices)
    result |= {
        "max_relative_error_vs_fp32": max(errs),
        "max_relative_error_activations": max(errs[:n_layers]),
        "max_relative_error_gradients": max(errs[n_layers:]),
        "within_1e-2": max(errs) <= 1e-2,
    }
    if cuda:
        tflops = gemm_tflops(device, torch.bfloat16)
        per_image = 2 * GFLOP_FWD_VITL16 * (args.size / 224) ** 2 * len(model.blocks) / 24  # tokens ~ size^2
        roofline = tflops * 1e3 / per_image
        extra = 0.5 if args.objective == "ssl_view" else 0.0  # the view's stop-gradient forward
        result |= {
            "gemm_bf16_tflops": tflops, "gflop_per_image": per_image, "roofline_images_per_s": roofline,
            "roofline_share": batched / roofline, "work_share": batched * (1 + extra) / roofline,
            "nsd_73k_seconds": 73000 / batched, "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9,
        }  # fmt: skip
    if args.compile:
        if time.perf_counter() - t_start > 0.5 * args.budget_s:
            result["compiled"] = "skipped: over half of --budget-s spent"
        else:
            t0 = time.perf_counter()
            compile_blocks(model)
            compiled, couts, _ = run_batched(model, obj, x, batch, args.autocast, device, args.ref)
            result |= {"compiled_images_per_s": compiled, "compiled_seconds_total": time.perf_counter() - t0,
                       "compiled_max_relative_error_vs_fp32": max(rel_errors(couts, ref))}  # fmt: skip
            if cuda:
                result["compiled_roofline_share"] = compiled / result["roofline_images_per_s"]
    result["seconds_total"] = time.perf_counter() - t_start
    for key, value in result.items():
        print(f"{key:>36}: {value:.4g}" if isinstance(value, float) else f"{key:>36}: {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
