"""Ratio benchmark of the ridge solver against its own earlier version, in one process.

Loads ``workflow/gradbrain/encoding/ridge.py`` as it was at ``--baseline`` (a git revision; the default is the last
one before the solver moved onto the array API, when ridge.py held its numpy and torch branches itself) beside the
current package, and times both on the same arrays, alternating, ``--repeats`` times: one training set's SVD
(``SVDGCV(...)``) and the fit of a batch of targets (``fit_predict``), for exact leave-one-out and GCV, n > p and
n <= p, on numpy and torch. It prints each case's median seconds and the ratio current / baseline (below 1: faster),
and writes ``benchmarks/out/solver_backend.json``. A shared machine moves absolute times a lot; ratios of runs
interleaved in one process much less.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from gradbrain.encoding import ridge
from gradbrain.encoding.cv import standardise

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "solver_backend.json"
BASELINE = "fc7f41b"
"""The last revision whose ridge.py is self-contained (numpy and torch branches behind its own ``Ops``)."""

CASES = {
    "loo n>p": {"n": 3000, "p": 512, "t": 1000, "criterion": "loo", "gram": False},
    "loo n>p big batch": {"n": 7200, "p": 256, "t": 5000, "criterion": "loo", "gram": False},
    "loo n<=p": {"n": 1000, "p": 1500, "t": 1000, "criterion": "loo", "gram": False},
    "gcv n>p gram": {"n": 3000, "p": 768, "t": 1000, "criterion": "gcv", "gram": True},
    "gcv n<=p": {"n": 1000, "p": 1500, "t": 1000, "criterion": "gcv", "gram": False},
}
"""Training rows n, features p and targets t of one fit; "big batch" is the automatic batch of a 9,000-image fold
(auto_target_batch: 1 GiB for six (n, t) float32 arrays), whose (n, t) arrays are past glibc's 32 MiB mmap threshold."""


def load_baseline(revision: str) -> Any:
    """ridge.py at ``revision`` as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:workflow/gradbrain/encoding/ridge.py"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "baseline_ridge.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_ridge", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_ridge"] = module
    spec.loader.exec_module(module)
    return module


def problem(n: int, p: int, t: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised correlated features (train, test) and targets of varied signal, float32."""
    rng = np.random.default_rng(seed)
    n_test = max(n // 4, 2)
    latent = rng.standard_normal((n + n_test, p // 4 + 1), dtype=np.float32)
    X = latent @ rng.standard_normal((latent.shape[1], p), dtype=np.float32)
    X += rng.standard_normal(X.shape, dtype=np.float32)
    Y = (X[:n] @ rng.standard_normal((p, t), dtype=np.float32)) * np.logspace(-2, 0.5, t, dtype=np.float32) / p
    Y += rng.standard_normal((n, t), dtype=np.float32)
    X_train, X_test = standardise(X[:n], X[n:])
    return X_train, X_test, Y


def run(module: Any, case: dict[str, Any], data: tuple, backend: str, alphas: np.ndarray) -> tuple[float, float, Any]:
    """Seconds of the SVD and of the fit, and the chosen alpha indices."""
    X_train, X_test, Y = data
    ops = module.Ops(backend, "cpu", "float32")
    start = time.perf_counter()
    model = module.SVDGCV(X_train, X_test, alphas, ops, case["criterion"], gram=case["gram"])
    svd = time.perf_counter() - start
    Y_dev = ops.asarray(Y)
    start = time.perf_counter()
    _, index = model.fit_predict(Y_dev)
    fit = time.perf_counter() - start
    return svd, fit, ops.to_numpy(index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the baseline ridge.py")
    parser.add_argument("--alphas", type=int, default=10, help="alphas, log-spaced over 1..1e8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch and BLAS (1 steadies timings)")
    parser.add_argument("--backends", nargs="*", default=["numpy", "torch"])
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    baseline = load_baseline(args.baseline)
    alphas = np.logspace(0, 8, args.alphas)
    results = {}
    for name in args.cases:
        case = CASES[name]
        data = problem(case["n"], case["p"], case["t"])
        for backend in args.backends:
            times: dict[str, list[float]] = {
                "baseline_svd": [],
                "baseline_fit": [],
                "current_svd": [],
                "current_fit": [],
            }
            same = True
            for _ in range(args.repeats):
                for label, module in (("baseline", baseline), ("current", ridge)):
                    svd, fit, index = run(module, case, data, backend, alphas)
                    times[f"{label}_svd"].append(svd)
                    times[f"{label}_fit"].append(fit)
                    if label == "baseline":
                        reference = index
                    else:
                        same &= bool(np.mean(index == reference) >= 0.99)
            median = {k: float(np.median(v)) for k, v in times.items()}
            ratio = {
                "svd": median["current_svd"] / median["baseline_svd"],
                "fit": median["current_fit"] / median["baseline_fit"],
                "total": (median["current_svd"] + median["current_fit"])
                / (median["baseline_svd"] + median["baseline_fit"]),
            }
            results[f"{name} {backend}"] = {"median_seconds": median, "ratio": ratio, "same_alphas": same}
            print(
                f"{name:>14s} {backend:>5s}: baseline svd {median['baseline_svd']:.3f} s fit "
                f"{median['baseline_fit']:.3f} s | ratio svd {ratio['svd']:.2f} fit {ratio['fit']:.2f} "
                f"total {ratio['total']:.2f} | alphas {'same' if same else 'DIFFER'}"
            )
    report = {"config": {k: str(v) for k, v in vars(args).items()}, "cases": CASES, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
