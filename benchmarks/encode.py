"""Benchmark of the encoding solver against scikit-learn and himalaya inside the same outer K-fold loop.

Times, on one synthetic problem: ``gradbrain.encoding.cv.CrossValidatedRidge`` (torch on --device, and numpy), a
scikit-learn loop (StandardScaler + ``RidgeCV(alpha_per_target=True)``, efficient LOO, the reference), and a
himalaya loop (``himalaya.ridge.RidgeCV``, numpy backend, and torch_cuda when CUDA is available). Every loop
standardises, fits, predicts and scores Pearson r per target on each outer fold. It prints seconds, speed-ups over
scikit-learn, and the agreement of predictions (fold 0), chosen alphas and r with scikit-learn; it writes
``benchmarks/out/encode.json``.

himalaya chooses alphas by an inner 5-fold split instead of leave-one-out, so its predictions agree with the others
only where both criteria pick the same alpha; its numbers are a timing comparison, not an equality check.

Defaults: the performance anchor's n=9000 and p=1024 (a ViT-L layer, NSD-sized training set) with t=15000 on CUDA and
a reduced t=1000 on the CPU, where scikit-learn would otherwise take a quarter of an hour (issue 5's CPU target).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from gradbrain.encoding.cv import CrossValidatedRidge, make_folds, standardise
from gradbrain.encoding.ridge import fit_predict_gcv, pearson_columns

OUT = Path(__file__).resolve().parent / "out" / "encode.json"


def make_problem(n: int, p: int, t: int, seed: int = 0, device: str = "numpy") -> tuple[np.ndarray, np.ndarray]:
    """Correlated features and targets whose signal-to-noise ratio varies over the targets (float32).

    ``device``: ``numpy`` draws with numpy; a torch device draws the same model there (other numbers), which takes
    seconds instead of a minute at THINGS-MEG's size (22,248 x 76,151 targets).
    """
    if device != "numpy":
        return _make_problem_torch(n, p, t, seed, device)
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, p // 4 + 1), dtype=np.float32)
    X = latent @ rng.standard_normal((latent.shape[1], p), dtype=np.float32) + rng.standard_normal(
        (n, p), dtype=np.float32
    )
    W = rng.standard_normal((p, t), dtype=np.float32) / np.sqrt(p)
    snr = np.logspace(-2, 0.5, t, dtype=np.float32)
    Y = (X @ W) * snr / np.sqrt(p // 4 + 2) + rng.standard_normal((n, t), dtype=np.float32)
    return X, Y


def _make_problem_torch(n: int, p: int, t: int, seed: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=device)

    latent = randn(n, p // 4 + 1)
    X = latent @ randn(latent.shape[1], p) + randn(n, p)
    snr = torch.logspace(-2, 0.5, t, device=device)
    Y = (X @ (randn(p, t) / np.sqrt(p))) * snr / np.sqrt(p // 4 + 2)
    Y += randn(n, t)
    return X.cpu().numpy(), Y.cpu().numpy()


def timed(fn: Callable[[], Any], sync: bool = False) -> tuple[float, Any]:
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def sklearn_loop(X: np.ndarray, Y: np.ndarray, folds: np.ndarray, alphas: np.ndarray) -> dict[str, Any]:
    """Reference: StandardScaler + RidgeCV(alpha_per_target=True) (efficient LOO) per outer fold."""
    r_folds, first = [], None
    for label in np.unique(folds):
        test = folds == label
        scaler = StandardScaler().fit(X[~test])
        model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(scaler.transform(X[~test]), Y[~test])
        pred = model.predict(scaler.transform(X[test]))
        r_folds.append(pearson_columns(pred, Y[test]))
        if first is None:
            first = (pred, model.alpha_)
    return {"r": np.mean(r_folds, 0), "pred0": first[0], "alpha0": first[1]}


def sklearn_fold0(X: np.ndarray, Y: np.ndarray, folds: np.ndarray, alphas: np.ndarray) -> dict[str, Any]:
    """scikit-learn's fold-0 predictions and alphas alone (for the float64 equality check)."""
    test = folds == np.unique(folds)[0]
    scaler = StandardScaler().fit(X[~test])
    model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(scaler.transform(X[~test]), Y[~test])
    return {"pred0": model.predict(scaler.transform(X[test])), "alpha0": model.alpha_}


def himalaya_loop(
    X: np.ndarray, Y: np.ndarray, folds: np.ndarray, alphas: np.ndarray, backend_name: str
) -> dict[str, Any]:
    """himalaya RidgeCV (alpha per target by inner 5-fold CV, intercept fitted) per outer fold."""
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV

    backend = set_backend(backend_name)
    try:
        r_folds, first = [], None
        for label in np.unique(folds):
            test = folds == label
            X_train, X_test = standardise(X[~test], X[test])
            model = HimalayaRidgeCV(alphas=alphas, fit_intercept=True, cv=5)
            model.fit(backend.asarray(X_train), backend.asarray(Y[~test]))
            pred = backend.to_numpy(model.predict(backend.asarray(X_test)))
            r_folds.append(pearson_columns(pred, Y[test]))
            if first is None:
                first = (pred, backend.to_numpy(model.best_alphas_))
        return {"r": np.mean(r_folds, 0), "pred0": first[0], "alpha0": first[1]}
    finally:
        set_backend("numpy")


def ours(X, Y, folds, alphas, backend: str, device: str, dtype: str) -> dict[str, Any]:
    """gradbrain's cross-validated scores; fold-0 predictions for the agreement check come from a separate call."""
    r = CrossValidatedRidge(X, folds, alphas, backend=backend, device=device, dtype=dtype).score(Y).r
    return {"r": r}


def fold0_predictions(X, Y, folds, alphas, backend: str, device: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    test = folds == np.unique(folds)[0]
    X_train, X_test = standardise(X[~test], X[test])
    return fit_predict_gcv(X_train, Y[~test], X_test, alphas, backend=backend, device=device, dtype=dtype)


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=9000, help="images")
    parser.add_argument("--p", type=int, default=1024, help="features")
    parser.add_argument("--t", type=int, default=15000 if cuda else 1000, help="targets")
    parser.add_argument("--folds", type=int, default=5, help="outer folds")
    parser.add_argument("--alphas", type=int, default=10, help="alphas, log-spaced over 1..1e8")
    parser.add_argument("--device", default="cuda" if cuda else "cpu", help="torch device of our solver")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="our compute dtype")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch and the BLAS libraries (default: theirs); 1 steadies timings on a "
        "CPU shared with other jobs, where spinning BLAS threads slow down by 10x or more",
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], help="solvers to skip: numpy sklearn himalaya (both backends) himalaya_numpy"
    )
    parser.add_argument("--generate", default="numpy", help="where to draw the problem: numpy, or a torch device")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    wall_start = time.perf_counter()
    X, Y = make_problem(args.n, args.p, args.t, device=args.generate)
    folds = make_folds(args.n, args.folds, seed=0)
    alphas = np.logspace(0, 8, args.alphas)
    on_cuda = str(args.device).startswith("cuda")
    print(
        f"n={args.n} p={args.p} t={args.t} folds={args.folds} alphas={args.alphas} device={args.device} "
        f"dtype={args.dtype} torch_threads={torch.get_num_threads()}"
    )

    Xw, Yw = make_problem(64, 8, 8, seed=1)
    fw = make_folds(64, args.folds)
    ours(Xw, Yw, fw, alphas, "torch", args.device, args.dtype)

    solvers: dict[str, Callable[[], dict[str, Any]]] = {
        f"gradbrain_torch_{args.device}": lambda: ours(X, Y, folds, alphas, "torch", args.device, args.dtype),
    }
    if "numpy" not in args.skip:
        solvers["gradbrain_numpy"] = lambda: ours(X, Y, folds, alphas, "numpy", "cpu", args.dtype)
    if "sklearn" not in args.skip:
        solvers["sklearn_RidgeCV"] = lambda: sklearn_loop(X, Y, folds, alphas)
    if "himalaya" not in args.skip:
        if "himalaya_numpy" not in args.skip:
            solvers["himalaya_numpy"] = lambda: himalaya_loop(X, Y, folds, alphas, "numpy")
        if cuda:
            himalaya_loop(Xw, Yw, fw, alphas, "torch_cuda")
            solvers["himalaya_torch_cuda"] = lambda: himalaya_loop(X, Y, folds, alphas, "torch_cuda")

    seconds, results = {}, {}
    for name, fn in solvers.items():
        seconds[name], results[name] = timed(fn, sync=cuda)
        print(f"{name:>28s}: {seconds[name]:8.2f} s")

    speedup = {}
    if "sklearn_RidgeCV" in seconds:
        print("speed-up over scikit-learn (its seconds / solver's seconds):")
        for name, sec in seconds.items():
            speedup[name] = seconds["sklearn_RidgeCV"] / sec
            print(f"{name:>28s}: {speedup[name]:8.2f} x")

    agreement: dict[str, dict[str, float | None]] = {}
    if "sklearn_RidgeCV" in results:
        ref = results["sklearn_RidgeCV"]
        scale = float(np.abs(ref["pred0"]).max())
        ours_fold0 = {
            name: (backend, device, dtype)
            for name, backend, device, dtype in [
                (f"gradbrain_torch_{args.device}", "torch", args.device, args.dtype),
                ("gradbrain_numpy", "numpy", "cpu", args.dtype),
                (f"gradbrain_torch_{args.device}_float64", "torch", args.device, "float64"),
                ("gradbrain_numpy_float64", "numpy", "cpu", "float64"),
            ]
            if name.removesuffix("_float64") in results
        }
        X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
        ref64 = sklearn_fold0(X64, Y64, folds, alphas)
        for name in [*ours_fold0, *[k for k in results if k not in ours_fold0 and k != "sklearn_RidgeCV"]]:
            reference = ref
            if name.endswith("_float64"):
                pred0, alpha0 = fold0_predictions(X64, Y64, folds, alphas, *ours_fold0[name])
                reference = ref64
            elif name in ours_fold0:
                pred0, alpha0 = fold0_predictions(X, Y, folds, alphas, *ours_fold0[name])
            else:
                pred0, alpha0 = results[name]["pred0"], results[name]["alpha0"]
            res = results.get(name)
            same = np.isclose(alpha0, reference["alpha0"], rtol=1e-4)
            diff = np.abs(pred0 - reference["pred0"]) / scale
            agreement[name] = {
                "fold0_pred_max_rel_diff": float(diff.max()),
                "fold0_pred_max_rel_diff_same_alpha": float(diff[:, same].max()) if same.any() else float("nan"),
                "fold0_alpha_agreement": float(same.mean()),
                "r_max_abs_diff": float(np.abs(res["r"] - ref["r"]).max()) if res else None,
            }
        print(
            "agreement with scikit-learn: fold-0 predictions (max difference / max |prediction|, over all targets and"
            " over targets with the same alpha), share of equal alphas, max difference of fold-mean r;"
            " *_float64: float64 data and solver against scikit-learn on the same float64 data"
        )
        for name, values in agreement.items():
            r_diff = values["r_max_abs_diff"]
            print(
                f"{name:>28s}: pred {values['fold0_pred_max_rel_diff']:.2e} "
                f"(same alpha {values['fold0_pred_max_rel_diff_same_alpha']:.2e})  "
                f"alpha {values['fold0_alpha_agreement']:.4f}  r " + ("-" if r_diff is None else f"{r_diff:.2e}")
            )
        print(f"mean r (scikit-learn): {ref['r'].mean():.4f}")

    wall = time.perf_counter() - wall_start
    print(f"wall time of the whole run: {wall:.1f} s")
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": torch.cuda.get_device_name() if on_cuda else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "seconds": seconds,
        "speedup_vs_sklearn": speedup,
        "agreement_vs_sklearn": agreement,
        "wall_seconds": wall,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
