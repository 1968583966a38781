"""Benchmark of the banded (joint) ridge against himalaya's BandedRidgeCV with the same candidate gammas and alphas.

Two parts per preset (NSD-like: n=9000 images, control 512 + gradient 1024 features; THINGS-MEG-like: n=22248):

1. gradbrain's joint cross-validated fit (``CrossValidatedBandedRidge``: 5 outer folds, per fold one SVD per
   candidate gamma, (gamma, alpha) per target by LOO) timed beside the single-band fit of the control band
   (``CrossValidatedRidge``); it prints seconds, the joint/control ratio, memory held and the gamma choices.
2. On outer fold 0: ``fit_predict_banded`` against himalaya ``BandedRidgeCV`` (numpy backend; ``torch_cuda`` with
   ``--himalaya-backend``), both float32, given the same candidate gammas (``n_iter`` as an array) and alphas; it
   prints both times, their ratio, the share of targets with the same (gamma, alpha), and the largest differences in
   predictions (relative to their scale, over targets with the same choice) and in fold-0 R^2. himalaya selects by
   an inner 5-fold split, not LOO, so choices may differ; its primal algebra forms n_test x n_train matrices per
   alpha (about 18 TFLOP for one NSD fold), so on the CPU it runs by default on ``--himalaya-n`` rows and
   ``--himalaya-targets`` targets (our solver on the same problem).

Defaults finish in a few minutes on 2 CPU cores: ``--t`` 200 targets per preset. The issue's sizes: ``--t 2000``
(NSD) or ``--t 5000`` (MEG) on the CPU; ``--device cuda`` takes t=15000 (NSD) and 20000 (MEG) and himalaya's full n.
Writes ``benchmarks/out/banded.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from gradbrain.encoding.banded import CrossValidatedBandedRidge, fit_predict_banded, two_band_gammas
from gradbrain.encoding.cv import CrossValidatedRidge, make_folds, standardise
from gradbrain.encoding.ridge import r2_columns

OUT = Path(__file__).resolve().parent / "out" / "banded.json"
PRESETS = {
    "nsd": {"n": 9000, "p_control": 512, "p_gradient": 1024, "t_gpu": 15000},
    "meg": {"n": 22248, "p_control": 512, "p_gradient": 1024, "t_gpu": 20000},
}


def make_problem(n: int, p_a: int, p_g: int, t: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A correlated control band, a gradient band partly predictable from it, and targets whose share of the
    gradient band's own signal and whose signal-to-noise ratio vary over the targets (float32)."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, p_a // 4), dtype=np.float32)
    A = latent @ rng.standard_normal((p_a // 4, p_a), dtype=np.float32) / np.sqrt(p_a // 4)
    A += rng.standard_normal((n, p_a), dtype=np.float32)
    G = A @ rng.standard_normal((p_a, p_g), dtype=np.float32) / np.sqrt(p_a)
    G += rng.standard_normal((n, p_g), dtype=np.float32)
    share = np.linspace(0, 1, t, dtype=np.float32)
    snr = np.logspace(-1.5, 0.5, t, dtype=np.float32)[rng.permutation(t)]
    signal = (A @ rng.standard_normal((p_a, t), dtype=np.float32)) * (1 - share) / np.sqrt(p_a)
    signal += (G @ rng.standard_normal((p_g, t), dtype=np.float32)) * share / np.sqrt(p_g)
    Y = signal * snr / signal.std(0) + rng.standard_normal((n, t), dtype=np.float32) + 3.0
    return A, G, Y


def timed(fn: Any, sync: bool) -> tuple[float, Any]:
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def himalaya_fold(bands_train, Y_train, bands_test, gammas, alphas, backend_name: str) -> tuple[np.ndarray, ...]:
    """himalaya BandedRidgeCV (inner 5-fold CV, intercept) with explicit gammas: predictions, gamma (B, t), alpha."""
    from himalaya.backend import set_backend
    from himalaya.ridge import BandedRidgeCV

    backend = set_backend(backend_name)
    try:
        params = {"n_iter": gammas, "alphas": alphas, "progress_bar": False, "warn": False}
        model = BandedRidgeCV(groups="input", solver_params=params, fit_intercept=True, cv=5)
        with np.errstate(divide="ignore", invalid="ignore"):  # it divides by sqrt(0) after the band-off row
            model.fit([backend.asarray(X) for X in bands_train], backend.asarray(Y_train))
        pred = backend.to_numpy(model.predict([backend.asarray(X) for X in bands_test]))
        alpha = backend.to_numpy(model.best_alphas_)
        return pred, np.exp(backend.to_numpy(model.deltas_)) * alpha, alpha
    finally:
        set_backend("numpy")


def joint_cv(A, G, Y, folds, gammas, alphas, device: str, sync: bool) -> dict[str, Any]:
    """Seconds of the joint and control-alone cross-validated fits (SVDs, then scores) and what they chose."""
    solver = {"backend": "torch", "device": device, "dtype": "float32"}
    t_joint_svd, joint = timed(lambda: CrossValidatedBandedRidge([A, G], folds, gammas, alphas, **solver), sync)
    t_joint_score, s_joint = timed(lambda: joint.score(Y), sync)
    t_ctrl_svd, ctrl = timed(lambda: CrossValidatedRidge(A, folds, alphas, **solver), sync)
    t_ctrl_score, s_ctrl = timed(lambda: ctrl.score(Y), sync)
    off = s_joint.gamma[1] == 0
    return {
        "seconds": {
            "joint_svds": t_joint_svd,
            "joint_score": t_joint_score,
            "control_svds": t_ctrl_svd,
            "control_score": t_ctrl_score,
        },
        "joint_over_control": (t_joint_svd + t_joint_score) / (t_ctrl_svd + t_ctrl_score),
        "held_gib": {"joint": joint.nbytes / 2**30, "control": ctrl.nbytes / 2**30},
        "share_band_off": float(off.mean()),
        "median_r2": {"joint": float(np.median(s_joint.r2)), "control": float(np.median(s_ctrl.r2))},
        "median_r2_gain_where_gradient_on": float(np.median((s_joint.r2 - s_ctrl.r2)[~off])) if (~off).any() else 0.0,
    }


def against_himalaya(A, G, Y, folds, gammas, alphas, device: str, backend: str, sync: bool) -> dict[str, Any]:
    """Fold 0: our LOO banded fit and himalaya's BandedRidgeCV on the same standardised bands and candidates."""
    test = folds == 0
    (A_tr, A_te), (G_tr, G_te) = standardise(A[~test], A[test]), standardise(G[~test], G[test])
    bands_train, bands_test = [A_tr, G_tr], [A_te, G_te]
    t_ours, (pred, gamma, alpha) = timed(
        lambda: fit_predict_banded(bands_train, Y[~test], bands_test, gammas, alphas, device=device), sync
    )
    t_him, (pred_h, gamma_h, alpha_h) = timed(
        lambda: himalaya_fold(bands_train, Y[~test], bands_test, gammas, alphas, backend), sync
    )
    same = np.isclose(alpha, alpha_h, rtol=1e-4) & np.all(np.isclose(gamma, gamma_h, rtol=1e-4, atol=1e-6), 0)
    scale = float(np.abs(pred_h - Y[~test].mean(0)).max())
    diff = np.abs(pred - pred_h) / scale
    r2, r2_h = r2_columns(Y[test], pred), r2_columns(Y[test], pred_h)
    return {
        "n": int(A.shape[0]),
        "t": int(Y.shape[1]),
        "seconds": {"gradbrain_fold0": t_ours, f"himalaya_{backend}_fold0": t_him},
        "himalaya_over_gradbrain": t_him / t_ours,
        "same_choice": float(same.mean()),
        "pred_max_rel_diff_same_choice": float(diff[:, same].max()) if same.any() else float("nan"),
        "r2_max_abs_diff_same_choice": float(np.abs(r2 - r2_h)[same].max()) if same.any() else float("nan"),
        "r2_max_abs_diff": float(np.abs(r2 - r2_h).max()),
        "r2_mean": {"gradbrain": float(r2.mean()), "himalaya": float(r2_h.mean())},
    }


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--n", type=int, default=None, help="images (default: the preset's)")
    parser.add_argument("--t", type=int, default=None, help="targets (default: 200 on the CPU, the GPU sizes on CUDA)")
    parser.add_argument("--folds", type=int, default=5, help="outer folds")
    parser.add_argument("--alphas", type=int, default=10, help="alphas, log-spaced over 1..1e8")
    parser.add_argument("--device", default="cuda" if cuda else "cpu", help="torch device of our solver")
    parser.add_argument("--himalaya-backend", default="numpy", choices=["numpy", "torch_cuda"])
    parser.add_argument("--himalaya-n", type=int, default=None, help="rows for the himalaya part (CPU default 3000)")
    parser.add_argument("--himalaya-targets", type=int, default=None, help="targets for it (CPU default 100)")
    parser.add_argument("--skip-himalaya", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and BLAS (default: theirs)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    on_cuda = str(args.device).startswith("cuda")
    gammas, alphas = two_band_gammas(), np.logspace(0, 8, args.alphas)
    print(f"gammas (rows, control and gradient weights): {np.round(gammas, 4).tolist()}; {args.alphas} alphas 1..1e8")

    wall_start = time.perf_counter()
    results: dict[str, Any] = {}
    for name in args.presets:
        preset = PRESETS[name]
        t = args.t or (preset["t_gpu"] if on_cuda else 200)
        n, p_a, p_g = args.n or preset["n"], preset["p_control"], preset["p_gradient"]
        A, G, Y = make_problem(n, p_a, p_g, t)
        folds = make_folds(n, args.folds, seed=0)
        print(f"[{name}] n={n} control={p_a} gradient={p_g} t={t} folds={args.folds} device={args.device}")
        res = {"n": n, "p_control": p_a, "p_gradient": p_g, "t": t}
        res["cv"] = joint_cv(A, G, Y, folds, gammas, alphas, args.device, on_cuda)
        cv = res["cv"]
        sec = cv["seconds"]
        print(
            f"  joint CV: SVDs {sec['joint_svds']:.1f} s + scores {sec['joint_score']:.1f} s; control alone: "
            f"{sec['control_svds']:.1f} + {sec['control_score']:.1f} s; joint/control {cv['joint_over_control']:.2f} x;"
            f" held {cv['held_gib']['joint']:.2f} GiB; band off for {cv['share_band_off']:.0%} of targets;"
            f" median R^2 joint {cv['median_r2']['joint']:.3f}, control {cv['median_r2']['control']:.3f}"
        )
        if not args.skip_himalaya:
            n_h = min(n, args.himalaya_n or (n if on_cuda else 3000))
            t_h = min(t, args.himalaya_targets or (t if on_cuda else 100))
            rows = np.random.default_rng(1).choice(n, n_h, replace=False) if n_h < n else np.arange(n)
            folds_h = make_folds(n_h, args.folds, seed=0)
            h = against_himalaya(
                A[rows], G[rows], Y[rows, :t_h], folds_h, gammas, alphas, args.device, args.himalaya_backend, on_cuda
            )
            res["himalaya"] = h
            secs = list(h["seconds"].values())
            print(
                f"  fold 0 (n={h['n']}, t={h['t']}): gradbrain {secs[0]:.1f} s, himalaya {secs[1]:.1f} s "
                f"({h['himalaya_over_gradbrain']:.1f} x); same (gamma, alpha) {h['same_choice']:.0%}; there max "
                f"|pred diff|/scale {h['pred_max_rel_diff_same_choice']:.1e}, max |R^2 diff| "
                f"{h['r2_max_abs_diff_same_choice']:.1e}; over all targets max |R^2 diff| {h['r2_max_abs_diff']:.1e}"
            )
        results[name] = res

    wall = time.perf_counter() - wall_start
    print(f"wall time of the whole run: {wall:.1f} s")
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": torch.cuda.get_device_name() if on_cuda else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "gammas": gammas.tolist(),
        "results": results,
        "wall_seconds": wall,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
