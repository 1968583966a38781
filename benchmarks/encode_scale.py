"""Peak host memory of ``encode_subject`` on a subject of the real datasets' size (issue 5's scale target).

Writes a brain store and a features store in the layouts that ``prepare_*`` and ``extract_features`` write
(random numbers, written chunk by chunk so this script itself stays small), then runs
``gradbrain.encode.encode_subject`` in a child process and reports its peak resident memory and wall time as JSON.

Sizes (``--scale``): ``meg`` = a THINGS-MEG subject, 22,248 images (200 of them a held-out test set) x 271 sensors x
281 times = 76,151 targets; ``nsd`` = an NSD subject, 10,000 images x 40,000 voxels. Memory does not depend on the
number of alphas, folds beyond the SVD cache, or layers beyond one kind's features, so the defaults keep the compute
small enough for a 2-core machine (2 folds, 2 alphas, 2 layers); pass ``--folds 5 --alphas 10 --layers 24`` on a
GPU node for the full job. Target: at most 16 GB of host memory.

    python benchmarks/encode_scale.py --scale meg --workdir /scratch/bench
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import zarr

from gradbrain import store
from gradbrain.encoding.stage import encode_subject

OUT = Path(__file__).resolve().parent / "out" / "encode_scale.json"
SCALES = {"meg": (22248, 271 * 281, 200), "nsd": (10000, 40000, 0)}


def write_brain(path: Path, n: int, t: int, n_test: int, modality: str, seed: int = 0) -> None:
    """A brain store: Y (n, t) float32 in (4096, 1024) chunks, split, stimulus_id, modality."""
    group = zarr.open_group(str(path), mode="w")
    Y = group.create_array("Y", shape=(n, t), chunks=(min(n, 4096), 1024), dtype="float32")
    rng = np.random.default_rng(seed)
    for start in range(0, n, 4096):
        stop = min(start + 4096, n)
        Y[start:stop] = rng.standard_normal((stop - start, t), dtype=np.float32)
    store.write_array(group, "stimulus_id", np.array([f"img{i:05d}" for i in range(n)]))
    store.write_array(group, "split", np.where(np.arange(n) >= n - n_test, "test", "train"))
    group.attrs["modality"] = modality


def write_features(path: Path, n: int, p: int, n_layers: int, seed: int = 1) -> None:
    """A features store with ``n_layers`` layers of ``p`` features for activations and gradients."""
    group = zarr.open_group(str(path), mode="w")
    rng = np.random.default_rng(seed)
    layers = [f"blocks.{i}" for i in range(n_layers)]
    for kind in ("activations", "gradients"):
        sub = group.create_group(kind)
        for name in layers:
            sub.create_array(name, shape=(n, p), chunks=(256, p), dtype="float32")[...] = rng.standard_normal(
                (n, p), dtype=np.float32
            )
    store.write_array(group, "stimulus_id", np.array([f"img{i:05d}" for i in range(n)]))
    group.attrs.update(
        {
            "layers": layers,
            "relative_depths": list(np.linspace(0, 1, n_layers)),
            "kinds": ["activations", "gradients"],
            "objective": "benchmark",
            "pooling": "mean",
            "weights_id": "random",
        }
    )


def _child(features: str, brain: str, out: str, cfg: dict) -> None:
    encode_subject(features, brain, out, cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="meg")
    parser.add_argument("--images", type=int, default=None, help="override the scale's images (dry runs)")
    parser.add_argument("--targets", type=int, default=None, help="override the scale's targets (dry runs)")
    parser.add_argument("--features", type=int, default=1024, help="features per layer (ViT-L: 1024)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--alphas", type=int, default=2)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/out/encode_scale"))
    parser.add_argument("--keep", action="store_true", help="keep the written stores")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    n, t, n_test = SCALES[args.scale]
    n, t = args.images or n, args.targets or t
    n_test = min(n_test, n // 10)
    args.workdir.mkdir(parents=True, exist_ok=True)
    brain, features, out = (args.workdir / name for name in ("brain.zarr", "features.zarr", "encoding.zarr"))
    start = time.perf_counter()
    write_brain(brain, n, t, n_test, "meg" if args.scale == "meg" else "fmri")
    write_features(features, n, args.features, args.layers)
    print(
        f"wrote {n} x {t} targets and {args.layers} layers x 2 kinds x {args.features} features "
        f"in {time.perf_counter() - start:.0f} s"
    )
    cfg = {
        "folds": args.folds,
        "seed": 0,
        "alphas": {"start": 0, "stop": 8, "num": args.alphas},
        "backend": args.backend,
        "device": args.device,
        "dtype": "float32",
        "target_batch": None,
        "cache_gb": 2.0,
        "identifiability_targets": 16,
    }
    start = time.perf_counter()
    child = mp.get_context("spawn").Process(target=_child, args=(str(features), str(brain), str(out), cfg))
    child.start()
    child.join()
    seconds = time.perf_counter() - start
    if child.exitcode != 0:
        raise SystemExit(f"encode_subject failed with exit code {child.exitcode}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    result = {
        "scale": args.scale,
        "images": n,
        "targets": t,
        "test_images": n_test,
        "features": args.features,
        "layers": args.layers,
        "folds": args.folds,
        "alphas": args.alphas,
        "device": args.device,
        "targets_gb": n * t * 4 / 1e9,
        "peak_rss_gb": peak_gb,
        "seconds": seconds,
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(args.workdir)


if __name__ == "__main__":
    main()
