"""Image decoding throughput: can the workers feed the GPU? (issue 3: "the GPU never waits on decoding").

Writes stimuli in the real formats to a temporary folder (an NSD ``imgBrick`` HDF5 of 425 x 425 images and THINGS
JPEGs, both cut from the natural photographs scikit-image ships), then times the extraction's own loader
(gradbrain.features.loader.image_loader) serially and with 1..W worker processes, in the GPU mode (workers decode, the
device resizes) and in the CPU mode (workers decode and resize to 224 px). Compare the images/s with the model's
(benchmarks/extract.py: ~1,600 images/s is the ViT-L/16 target on an H100). Writes benchmarks/out/decode.json.
Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from gradbrain.data import prepare
from gradbrain.data.nsd.write import write_image_brick
from gradbrain.data.things_meg.write import write_image
from gradbrain.features.loader import image_loader
from gradbrain.models.model import Preprocessing
from gradbrain.simulation import photos

PREP = Preprocessing(input_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=1.0)


def write_stimuli(root: Path, n: int, nsd_size: int, things_size: int) -> tuple[dict, list, dict, list]:
    images, _ = photos.crops(n, nsd_size, seed=0)
    write_image_brick(root / "nsd", images)
    small, _ = photos.crops(n, things_size, seed=1)
    ids = [f"concept{i // 12:04d}/concept{i // 12:04d}_{i % 12:02d}s.jpg" for i in range(n)]
    for sid, img in zip(ids, small, strict=True):
        write_image(root / "things", sid, img)
    return (
        {"format": "nsd", "root": str(root / "nsd")},
        list(prepare.nsd_stimulus_id(np.arange(n))),
        {"format": "things_meg", "images_root": str(root / "things"), "image_size": things_size},
        ids,
    )


def rate(read, ids, batch: int, workers: int, decode_only: bool) -> float:
    """Steady-state images/s: timed from the first batch on, so worker start-up (once per job) is left out."""
    loader = iter(image_loader(read, ids, PREP, batch, num_workers=workers, decode_only=decode_only))
    next(loader)
    t0 = time.perf_counter()
    n = sum(len(idx) for _, idx in loader)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=768)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", default=None, help="comma-separated worker counts (default 0,1,2,4,... to the cores)")
    p.add_argument("--nsd-size", type=int, default=425)
    p.add_argument("--things-size", type=int, default=500)
    p.add_argument(
        "--modes",
        default="decode_only,decode_and_resize_224",
        help="decode_only (the GPU mode: workers decode, the device resizes), decode_and_resize_224 (CPU)",
    )
    p.add_argument("--out", default="benchmarks/out/decode.json")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    counts = [int(w) for w in args.workers.split(",")] if args.workers else sorted(
        {0, 1, *[2**k for k in range(1, 8) if 2**k <= cores]})  # fmt: skip
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpu_count": cores,
              "machine": platform.processor() or platform.machine(), "n_images": args.n, "batch": args.batch,
              "nsd_size": args.nsd_size, "things_size": args.things_size, "images_per_s": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        nsd_ds, nsd_ids, things_ds, things_ids = write_stimuli(Path(tmp), args.n, args.nsd_size, args.things_size)
        for name, ds, ids in (("nsd_hdf5", nsd_ds, nsd_ids), ("things_jpeg", things_ds, things_ids)):
            read = prepare.image_reader(ds)
            modes = {"decode_only": True, "decode_and_resize_224": False}
            for mode in args.modes.split(","):
                decode_only = modes[mode]
                for w in counts:
                    r = rate(read, ids, args.batch, w, decode_only)
                    result["images_per_s"][f"{name}/{mode}/workers={w}"] = r
                    print(f"{name:>12} {mode:>22} workers={w:<3} {r:8.1f} images/s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
