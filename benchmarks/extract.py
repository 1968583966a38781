"""Extraction speed: batched activations + per-image gradients against a naive one-image loop, in one run.

Default (GPU): the DINOv3 ViT-L/16 architecture (timm `vit_large_patch16_dinov3`, random init) at 224 px, all 24
blocks, mean-pooled, bf16 autocast. Prints images/s of both paths, their ratio, the share of the bf16 roofline
(a GEMM timed in the same run; 125.7 GFLOP forward per image, the backward to activations about the same) and the
relative error of the bf16 outputs against an fp32 reference. On a CPU use a small stand-in, e.g.
`python benchmarks/extract.py --arch vit_small_patch16_dinov3 --size 64 --depth 6 --n 64`.
Writes benchmarks/out/extract.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from gradbrain import extract, objectives
from gradbrain.catalogue import model_spec
from gradbrain.models import load_model

GFLOP_FWD_VITL16 = 125.7


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gemm_tflops(device: str, dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def run(model, objective, x: torch.Tensor, batch: int, autocast: str | None, device: str) -> tuple[float, list]:
    capture = extract.Capture(model.sampled_blocks)
    outs = []
    try:
        extract.extract_batch(model, objective, x[:batch], torch.arange(batch), capture, autocast)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for lo in range(0, len(x), batch):
            idx = torch.arange(lo, min(lo + batch, len(x)))
            acts, grads = extract.extract_batch(model, objective, x[idx], idx, capture, autocast)
            outs.append([t.float().cpu() for t in acts + grads])
        sync(device)
        return len(x) / (time.perf_counter() - t0), outs
    finally:
        capture.remove()


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="vit_large_patch16_dinov3")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--depth", type=int, default=None, help="override the number of blocks (CPU stand-ins)")
    p.add_argument("--n", type=int, default=1024 if cuda else 64)
    p.add_argument("--batch", type=int, default=256 if cuda else 16)
    p.add_argument("--naive", type=int, default=64 if cuda else 8, help="images for the one-image loop")
    p.add_argument("--autocast", default="bfloat16" if cuda else None)
    p.add_argument("--objective", default="ssl_view")
    p.add_argument("--out", default="benchmarks/out/extract.json")
    args = p.parse_args()
    device = "cuda" if cuda else "cpu"
    kwargs = {"img_size": args.size} | ({"depth": args.depth} if args.depth else {})
    spec = model_spec("bench", {"catalogue": "dinov3_vitl16", "arch": args.arch, "kwargs": kwargs,
                                "input_size": args.size, "objective": args.objective, "n_layers": 1000,
                                "weights": {"hub": None}})  # fmt: skip
    model = load_model(spec, device=device)
    objective = objectives.make_objective(model, seed=0)
    x = torch.randn(args.n, 3, args.size, args.size, device=device)
    batched, outs = run(model, objective, x, args.batch, args.autocast, device)
    naive, _ = run(model, objective, x[: args.naive], 1, args.autocast, device)
    _, ref = run(model, objective, x[: args.batch], args.batch, None, device)  # fp32 reference, same images
    errs = [float((a - b).norm() / b.norm()) for a, b in zip(outs[0], ref[0])]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "arch": args.arch, "size": args.size, "blocks": len(model.blocks), "batch": args.batch,
        "autocast": args.autocast, "objective": args.objective,
        "batched_images_per_s": batched, "naive_images_per_s": naive, "batched_over_naive": batched / naive,
        "max_relative_error_vs_fp32": max(errs),
    }  # fmt: skip
    if cuda and args.arch == "vit_large_patch16_dinov3" and args.size == 224:
        tflops = gemm_tflops(device, torch.bfloat16, 8192)
        roofline = tflops * 1e3 / (2 * GFLOP_FWD_VITL16)
        result |= {"gemm_tflops": tflops, "roofline_images_per_s": roofline, "roofline_share": batched / roofline,
                   "nsd_73k_seconds": 73000 / batched}  # fmt: skip
    for key, value in result.items():
        print(f"{key:>28}: {value:.4g}" if isinstance(value, float) else f"{key:>28}: {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
