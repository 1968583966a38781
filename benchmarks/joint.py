"""The joint fits and the test of gradient-specific signal at one real subject's size, and their agreement with
the CPU float64 solver on a subsample (issue 23).

Two parts, both through ``gradbrain.encoding.joint`` exactly as the encoding stage calls it:

1. ``full``: one THINGS-MEG-sized subject at the paper's 30 Hz (22,248 images, 271 sensors x 43 times = 11,653
   targets), the 24 layers of a ViT-L (1,024 features each) for activations and gradients, the control space of
   ``control_components`` per activation layer, 5 folds x 10 alphas and the default band ratios, with the ridge on
   ``--device``. Times each phase (control space, control fit, the partial F-tests, the banded fits, the unique
   maps' identifiability), the peak GPU memory (``torch.cuda.max_memory_allocated``) and the peak host memory.
2. ``check``: the same computation on a subsample (``--check-n`` images, ``--check-t`` targets, ``--check-layers``
   layers) with the ridge on ``--device`` in float32 and with the numpy float64 solver on the CPU; prints the largest
   differences of the joint R^2 and r, of the F-test p-values (log10) and of the layers' summed-test p-values.

The problem is drawn on ``--device``: layers share a latent stimulus space, the gradients depend on the activations
and carry their own part, and the targets read both at signal-to-noise ratios spread over the targets.

    PYTHONPATH=workflow python benchmarks/joint.py --device cuda           # the issue's sizes (GPU)
    PYTHONPATH=workflow python benchmarks/joint.py --n 1500 --sensors 20 --times 10 --layers 3 --features 64 \
        --control-components 8 --gradient-components 8 --check-n 600 --check-t 50 --check-layers 2   # dry run
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradbrain.encoding import joint
from gradbrain.encoding.cv import make_folds
from gradbrain.encoding.partition import control_space

OUT = Path(__file__).resolve().parent / "out" / "joint.json"


def draw_problem(n: int, t: int, n_layers: int, p: int, device: str, seed: int = 0) -> dict[str, Any]:
    """Activations and gradients (n, p) per layer and targets (n, t), float32 numpy, drawn on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device)

    latent = randn(n, 64)
    acts, grads = [], []
    for _ in range(n_layers):
        a = latent @ randn(64, p) / 8 + randn(n, p)
        acts.append(a)
        grads.append((a @ randn(p, p) / p**0.5 + randn(n, p)).cpu().numpy())
    share = torch.linspace(0, 0.3, t, device=device)
    signal = sum(a @ randn(p, t) for a in acts[:: max(1, n_layers // 4)]) * (1 - share)
    signal += torch.from_numpy(grads[-1]).to(device) @ randn(p, t) * share
    snr = torch.logspace(-1.5, 0.0, t, device=device)[torch.randperm(t, generator=g, device=device)]
    Y = signal * snr / signal.std(0) + randn(n, t)
    return {"activations": [a.cpu().numpy() for a in acts], "gradients": grads, "Y": Y.cpu().numpy()}


class Phases:
    """Seconds per named phase, timed by wrapping module functions (the device synchronised at each end); a phase
    called inside another counts to itself only (exclusive times)."""

    def __init__(self, device: str):
        self.device, self.seconds, self.inner = device, {}, [0.0]

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def wrap(self, module: Any, name: str, phase: str) -> Callable[[], None]:
        original = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            start = time.perf_counter()
            self.inner.append(0.0)
            out = original(*args, **kwargs)
            self.sync()
            spent = time.perf_counter() - start
            nested = self.inner.pop()
            self.inner[-1] += spent
            self.seconds[phase] = self.seconds.get(phase, 0.0) + spent - nested
            print(f"{phase}: {spent - nested:.1f} s", flush=True)
            return out

        setattr(module, name, timed)
        return lambda: setattr(module, name, original)


def run_partition(problem: dict[str, Any], args: argparse.Namespace, solver: dict[str, Any], phases: Phases) -> Any:
    """The encoding stage's sequence: control space, control fit, then ``joint_fit`` of the gradients."""
    n = problem["Y"].shape[0]
    folds = make_folds(n, args.folds, 0)
    alphas = np.logspace(0, 8, args.alphas)
    depths = np.linspace(0, 1, len(problem["gradients"]))
    part = {"band_ratios": args.band_ratios}
    start = time.perf_counter()
    control, _ = control_space(problem["activations"], args.control_components)
    phases.seconds["control_space"] = time.perf_counter() - start
    print(f"control space {control.shape}: {phases.seconds['control_space']:.1f} s", flush=True)
    phases.sync()
    start = time.perf_counter()
    r2_control, _ = joint.control_scores(control, problem["Y"], folds, alphas, solver)
    phases.sync()
    phases.seconds["control_fit"] = time.perf_counter() - start
    print(f"control fit: {phases.seconds['control_fit']:.1f} s", flush=True)
    undo = [phases.wrap(joint, "f_tests", "f_tests"),
            phases.wrap(joint, "unique_identifiability", "identifiability")]  # fmt: skip
    start = time.perf_counter()
    try:
        fit = joint.joint_fit(control, problem["gradients"], problem["Y"], folds, alphas,
                              joint.band_weights(part), args.gradient_components, solver, label="gradients",
                              depths=depths, control_scores_r2=r2_control)  # fmt: skip
    finally:
        for u in undo:
            u()
    phases.sync()
    total = time.perf_counter() - start
    # the partial F-tests (of the data and, inside the identifiability, of its planted targets) aside, the rest of
    # joint_fit is the bases and the banded fits
    phases.seconds["banded_fits"] = total - phases.inner[0]
    phases.seconds["joint_fit_total"] = total
    return fit


def subsample(problem: dict[str, Any], n: int, t: int, n_layers: int) -> dict[str, Any]:
    rows = np.sort(np.random.default_rng(1).choice(problem["Y"].shape[0], n, replace=False))
    cols = np.sort(np.random.default_rng(2).choice(problem["Y"].shape[1], t, replace=False))
    keep = np.unique(np.linspace(0, len(problem["gradients"]) - 1, n_layers).round().astype(int))
    return {
        "activations": [problem["activations"][k][rows] for k in keep],
        "gradients": [problem["gradients"][k][rows] for k in keep],
        "Y": np.ascontiguousarray(problem["Y"][np.ix_(rows, cols)]),
    }


def compare(fast: Any, ref: Any) -> dict[str, float]:
    """Largest differences of the ``--device`` float32 fit from the float64 numpy fit."""

    def log_p(p: np.ndarray) -> np.ndarray:
        return np.log10(np.clip(np.asarray(p, dtype=np.float64), 1e-300, 1))

    return {
        "r2_joint_max_abs": float(np.nanmax(np.abs(fast.r2_joint - ref.r2_joint))),
        "r_joint_max_abs": float(np.nanmax(np.abs(fast.r_joint - ref.r_joint))),
        "r_joint_p99_abs": float(np.nanpercentile(np.abs(fast.r_joint - ref.r_joint), 99)),
        "f_p_log10_max_abs": float(np.nanmax(np.abs(log_p(fast.f_p) - log_p(ref.f_p)))),
        "layer_p_log10_max_abs": float(np.nanmax(np.abs(log_p(fast.layer_p) - log_p(ref.layer_p)))),
        "layer_stat_max_rel": float(np.nanmax(np.abs(fast.layer_stat - ref.layer_stat) / np.abs(ref.layer_stat))),
        "same_significant_layers": bool(np.array_equal(fast.layer_p < 0.05, ref.layer_p < 0.05)),
    }


def peak_gpu_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=22248, help="training images (THINGS-MEG: 22,248)")
    p.add_argument("--sensors", type=int, default=271)
    p.add_argument("--times", type=int, default=43, help="time points (43 at 30 Hz over -0.1..1.3 s)")
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--features", type=int, default=1024)
    p.add_argument("--control-components", type=int, default=32)
    p.add_argument("--gradient-components", type=int, default=32)
    p.add_argument("--band-ratios", type=float, nargs="+", default=[0.2, 5.0])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--alphas", type=int, default=10)
    p.add_argument("--device", default="cuda")
    p.add_argument("--check-n", type=int, default=3000)
    p.add_argument("--check-t", type=int, default=400)
    p.add_argument("--check-layers", type=int, default=4)
    p.add_argument("--skip", nargs="*", default=[], choices=["full", "check"])
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")  # joint_fit's lines per layer
    t = args.sensors * args.times
    result: dict[str, Any] = {"machine": platform.node(), "device": args.device,
                              "sizes": {"n": args.n, "targets": t, "layers": args.layers, "features": args.features,
                                        "control_components": args.control_components,
                                        "gradient_components": args.gradient_components, "folds": args.folds,
                                        "alphas": args.alphas, "band_ratios": args.band_ratios}}  # fmt: skip
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(0)

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))

    start = time.perf_counter()
    problem = draw_problem(args.n, t, args.layers, args.features, args.device)
    result["draw_seconds"] = time.perf_counter() - start
    print(f"drew {args.n} x {t} targets, {args.layers} layers x 2 kinds x {args.features} in "
          f"{result['draw_seconds']:.1f} s", flush=True)  # fmt: skip
    solver = {"backend": "torch", "device": args.device, "dtype": "float32", "target_batch": None}
    if "check" not in args.skip:
        small = subsample(problem, args.check_n, args.check_t, args.check_layers)
        fits = {}
        for name, s in (("device_float32", solver),
                        ("numpy_float64", {"backend": "numpy", "device": "cpu", "dtype": "float64",
                                           "target_batch": None})):  # fmt: skip
            phases = Phases(s["device"])
            start = time.perf_counter()
            fits[name] = run_partition(small, args, s, phases)
            result.setdefault("check", {})[f"{name}_seconds"] = time.perf_counter() - start
        result["check"] |= {"n": args.check_n, "targets": args.check_t, "layers": len(small["gradients"]),
                            **compare(fits["device_float32"], fits["numpy_float64"])}  # fmt: skip
        print("check:", json.dumps(result["check"]), flush=True)
        save()
    if "full" not in args.skip:
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        phases = Phases(args.device)
        fit = run_partition(problem, args, solver, phases)
        result["full"] = {"seconds": {k: round(v, 2) for k, v in phases.seconds.items()},
                          "peak_gpu_gb": peak_gpu_gb(args.device),
                          "df_num": np.asarray(fit.df_num).tolist(), "df_den": np.asarray(fit.df_den).tolist(),
                          "median_layer_p": float(np.median(fit.layer_p))}  # fmt: skip
        print("full:", json.dumps(result["full"]), flush=True)
    result["peak_host_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    save()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
