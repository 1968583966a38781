"""Peak host memory and wall time of the encoding job at growing sizes, and their fit (what ``jobsize.encode`` asks).

Runs ``encode_subject`` (both kinds, the partition on: control space, joint fits, F-tests) in a child process per
size on synthetic stores in the real layouts (``encode_scale.write_brain`` / ``write_features``: float32 targets,
layers of ``--features`` columns), one size at a time, and records each child's peak resident memory (ru_maxrss)
and wall time. Sizes grow one factor at a time from a base (images, targets, layers), so that each coefficient of

    peak_bytes = base + a n t + b n w + c kept,    seconds = s0 + n L (u t + v w)

with every target in one solver batch (``encoding.target_batch`` >= t); two more runs at a batch of t0 targets
(t0 and t1 targets) give what a target costs outside the solver's batch, a1 (the slope of peak in n t there, at
least the 4 bytes of the float32 training targets, which the job holds throughout: a slope below that means another
phase set the peak), so that with batches of B targets the term is a1 n t + (a - a1) n min(t, B).

(n images, t targets, L layers, w layer width; kept = min(cache_gb, L (k - 1) n w 4 bytes), the singular vectors
of the single-layer fits one kind holds for its identifiability pass (k folds, ``CrossValidatedRidge.nbytes``), c
what a fit holds per byte of them; the control space, n L q float32 for q control components, is 68 MB at the
paper's size, below the fit's resolution) is measured, not assumed; the least-squares
fit over the runs and its extrapolation to the paper's THINGS-MEG subject at 30 Hz and 200 Hz are printed and
written as JSON. The fit is linear: it holds while every term that could grow faster (an (n, n) or (t, t) array)
stays absent, which tests/encoding/test_stage_memory.py and test_partition.py check.

    PYTHONPATH=workflow python benchmarks/jobsize.py --workdir /tmp/jobsize
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
from encode_scale import write_brain, write_features

from gradbrain.encoding.stage import encode_subject

OUT = Path(__file__).resolve().parent / "out" / "jobsize.json"
PAPER = {"30 Hz": (22_248, 271 * 43, 24), "200 Hz": (22_248, 271 * 281, 24)}
"""THINGS-MEG, one participant: training images, targets (sensors x times), ViT-L layers."""


def _child(features: str, brain: str, out: str, cfg: dict, queue: mp.Queue) -> None:
    start = time.perf_counter()
    encode_subject(features, brain, out, cfg)
    queue.put((time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def run(workdir: Path, n: int, t: int, layers: int, width: int, cfg: dict) -> dict:
    """One encoding job at (n, t, layers) in a fresh child: its peak RSS (bytes) and seconds."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    brain, features, out = (workdir / name for name in ("brain.zarr", "features.zarr", "encoding.zarr"))
    write_brain(brain, n, t, 0, "meg")
    write_features(features, n, width, layers)
    queue = mp.get_context("spawn").Queue()
    child = mp.get_context("spawn").Process(target=_child, args=(str(features), str(brain), str(out), cfg, queue))
    child.start()
    seconds, peak = queue.get()
    child.join()
    return {"images": n, "targets": t, "layers": layers, "width": width, "peak_bytes": peak, "seconds": seconds}


def kept(n: float, layers: float, width: float, folds: int, cache_gb: float) -> float:
    """Bytes of the single-layer fits one kind keeps for its identifiability pass (at most ``cache_gb``)."""
    return np.minimum(cache_gb * 2**30, layers * (folds - 1) * n * width * 4.0)


def fit(runs: list[dict], folds: int, cache_gb: float) -> dict:
    """Least-squares coefficients of the module docstring's two models over the runs."""
    n, t, L, w = (np.array([r[k] for r in runs], dtype=float) for k in ("images", "targets", "layers", "width"))
    design = np.stack([np.ones_like(n), n * t, n * w, kept(n, L, w, folds, cache_gb)], 1)
    mem = np.linalg.lstsq(design, [r["peak_bytes"] for r in runs])
    sec = np.linalg.lstsq(np.stack([np.ones_like(n), n * L * t, n * L * w], 1), [r["seconds"] for r in runs])
    return {"memory": dict(zip(("base", "per_n_t", "per_n_w", "per_kept_byte"), mem[0].tolist(), strict=True)),
            "seconds": dict(zip(("base", "per_n_L_t", "per_n_L_w"), sec[0].tolist(), strict=True))}  # fmt: skip


def predict(coef: dict, n: int, t: int, layers: int, width: int, folds: int, cache_gb: float, batch: int) -> tuple:
    """(peak GB, seconds) of the fitted models at a size, with solver batches of ``batch`` targets."""
    m, s = coef["memory"], coef["seconds"]
    outside = m["per_n_t_outside_batch"]
    peak = m["base"] + outside * n * t + (m["per_n_t"] - outside) * n * min(t, batch)
    peak += m["per_n_w"] * n * width + m["per_kept_byte"] * kept(n, layers, width, folds, cache_gb)
    return peak / 1e9, s["base"] + s["per_n_L_t"] * n * layers * t + s["per_n_L_w"] * n * layers * width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs=2, default=[1500, 3000])
    parser.add_argument("--targets", type=int, nargs=2, default=[500, 2000])
    parser.add_argument("--layers", type=int, nargs=2, default=[2, 4])
    parser.add_argument("--features", type=int, default=1024, help="features per layer (ViT-L: 1024)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--alphas", type=int, default=10)
    parser.add_argument("--control-components", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/out/jobsize"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--resume", type=Path, help="a file of runs already measured (one JSON line each)")
    args = parser.parse_args()
    q = args.control_components
    partition = {"enabled": True, "control_components": q, "gradient_components": 32, "band_ratios": [0.2, 5.0]}
    cfg = {"folds": args.folds, "seed": 0, "alphas": {"start": 0, "stop": 8, "num": args.alphas}, "backend": "torch",
           "device": "cpu", "dtype": "float32", "target_batch": 20000, "cache_gb": 2.0, "identifiability_targets": 16,
           "kinds": ["activations", "gradients"], "partition": partition}  # fmt: skip
    (n0, n1), (t0, t1), (l0, l1) = args.images, args.targets, args.layers
    sizes = [(n0, t0, l0), (n1, t0, l0), (n0, t1, l0), (n0, t0, l1), (n1, t1, l1)]
    runs = [json.loads(line) for line in args.resume.read_text().splitlines()] if args.resume else []
    for n, t, layers in sizes[len(runs) :]:
        runs.append(run(args.workdir, n, t, layers, args.features, cfg))
        print(json.dumps(runs[-1]), flush=True)
    batched = [run(args.workdir, n0, t, l0, args.features, {**cfg, "target_batch": t0}) for t in (t0, t1)]
    print(json.dumps(batched), flush=True)
    shutil.rmtree(args.workdir, ignore_errors=True)
    coef = fit(runs, args.folds, cfg["cache_gb"])
    slope = (batched[1]["peak_bytes"] - batched[0]["peak_bytes"]) / (n0 * (t1 - t0))
    coef["memory"]["measured_per_n_t_outside_batch"] = slope
    coef["memory"]["per_n_t_outside_batch"] = max(slope, 4.0)  # the float32 training targets are held throughout
    paper = {}
    for name, (n, t, layers) in PAPER.items():
        for batch in (20000, 4096):
            gb, seconds = predict(coef, n, t, layers, args.features, args.folds, cfg["cache_gb"], batch)
            size = {"images": n, "targets": t, "layers": layers}
            paper[f"{name}, target_batch {batch}"] = size | {"peak_gb": round(gb, 2), "hours": round(seconds / 3600, 2)}
    result = {"settings": {k: v for k, v in cfg.items() if k != "alphas"} | {"alphas": args.alphas},
              "runs": runs, "batched_runs": batched, "fit": coef, "paper": paper}  # fmt: skip
    print(json.dumps(paper, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
