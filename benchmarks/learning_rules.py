"""Cost of the learning-rule kinds: images/s of activations + gradients alone, then with each rule kind added, and
with all of them, on one model in one run (same images, same batch).

Default (GPU): the DINOv3 ViT-L/16 architecture (random init) at 224 px, all 24 blocks, bf16 autocast. On a CPU use a
small stand-in, e.g. `python benchmarks/learning_rules.py --arch vit_small_patch16_dinov3 --size 64 --depth 6 --n 64`.
Writes benchmarks/out/learning_rules.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from gradbrain.features import extract, objectives
from gradbrain.features.capture import Capture
from gradbrain.features.kinds import ALL_KINDS, BASE_KINDS, RULE_KINDS
from gradbrain.models.catalogue import model_spec
from gradbrain.models.load import load_model


def images_per_s(model, objective, x, batch: int, kinds, autocast, device: str) -> float:
    rules = extract.make_rules(model, kinds)
    capture = Capture(model.sampled_blocks)
    if rules:
        rules.attach()
    try:
        extract.batch_features(model, objective, x[:batch], torch.arange(batch), capture, rules, autocast)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for lo in range(0, len(x), batch):
            idx = torch.arange(lo, min(lo + batch, len(x)))
            extract.batch_features(model, objective, x[idx], idx, capture, rules, autocast)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return len(x) / (time.perf_counter() - t0)
    finally:
        capture.remove()
        if rules:
            rules.remove()


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="vit_large_patch16_dinov3")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--depth", type=int, default=None, help="override the number of blocks (CPU stand-ins)")
    p.add_argument("--n", type=int, default=512 if cuda else 64)
    p.add_argument("--batch", type=int, default=128 if cuda else 16)
    p.add_argument("--autocast", default="bfloat16" if cuda else None)
    p.add_argument("--objective", default="ssl_view")
    p.add_argument("--out", default="benchmarks/out/learning_rules.json")
    args = p.parse_args()
    device = "cuda" if cuda else "cpu"
    kwargs = {"img_size": args.size} | ({"depth": args.depth} if args.depth else {})
    spec = model_spec("bench", {"catalogue": "dinov3_vitl16", "arch": args.arch, "kwargs": kwargs,
                                "input_size": args.size, "objective": args.objective, "n_layers": 1000,
                                "weights": {"hub": None}})  # fmt: skip
    model = load_model(spec, device=device)
    objective = objectives.make_objective(model, seed=0)
    x = torch.randn(args.n, 3, args.size, args.size, device=device)
    base = BASE_KINDS
    runs = {"default": base} | {k: (*base, k) for k in RULE_KINDS} | {"all": ALL_KINDS}
    rates = {
        name: images_per_s(model, objective, x, args.batch, kinds, args.autocast, device)
        for name, kinds in runs.items()
    }
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "arch": args.arch, "size": args.size, "blocks": len(model.blocks), "batch": args.batch, "n": args.n,
        "autocast": args.autocast, "objective": args.objective, "images_per_s": rates,
        "time_over_default": {name: rates["default"] / rate for name, rate in rates.items()},
    }  # fmt: skip
    for name, rate in rates.items():
        print(f"{name:>28}: {rate:8.2f} images/s, {rates['default'] / rate:5.2f} x the default time")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
