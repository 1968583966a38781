"""Under ``forward_only``, is the gradients' temporal score a property of the brain or of the noise?

A forward-only brain has no backward sweep, yet the per-subject tests of the gradients' temporal score fire far above
5 % (docs/power.md). This separates the two possible reasons: for ``--brains`` simulated brains (read-out weights and
topographies of one seed) it draws ``--reps`` independent sensor-noise realisations each and scores every one with
the hierarchy stage's functions. If the temporal score varied only with the noise, a better null (one that respects
correlated layers) would fix the test; if it is stable within a brain and differs between brains, the gradient
features carry a real, brain-specific temporal order inherited from the forward sweep, and no null over noise can
call it a false positive: only a test across brains (subjects as a random effect) or an estimand that is zero under
``forward_only`` can. Writes JSON; never a test.

    PYTHONPATH=workflow python benchmarks/power_forward_only.py \
        --features results/power_meg/power/features --out benchmarks/power_forward_only.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from gradbrain.encoding.cv import CrossValidatedRidge, alpha_grid, make_folds
from gradbrain.hierarchy import metrics as H
from gradbrain.power import brains as power_brains
from gradbrain.power import features as power_features
from gradbrain.simulation import brain as sim_brain

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, required=True, help="folder of power_features stores ({model}.zarr)")
    parser.add_argument("--models", nargs="+", default=["demo_cnn", "demo_vit"])
    parser.add_argument("--n-images", type=int, default=900)
    parser.add_argument("--noise", type=float, nargs="+", default=[1.0, 6.0])
    parser.add_argument("--brains", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "power_forward_only.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    hierarchy = {**cfg["hierarchy"], **cfg["power"]["hierarchy"]}
    operator = power_brains.meg_time_operator(cfg["power"]["preprocessing"])
    folds, alphas = make_folds(args.n_images, int(cfg["encoding"]["folds"]), 0), alpha_grid(cfg["encoding"])
    smooth = sim_brain.smooth_noise
    results = []
    for model in args.models:
        depths, feats = power_features.load_power_features(args.features / f"{model}.zarr", args.n_images)
        drivers = power_features.make_drivers({model: (depths, feats)}, int(cfg["simulation"]["readout_components"]))
        for noise in args.noise:
            start = time.perf_counter()
            sim = {**cfg["simulation"]["meg"], "noise": noise}
            Ys, draws = [], []
            for brain in range(args.brains):
                for rep in range(args.reps):
                    noise_rng = np.random.default_rng([99, brain, rep])
                    # the brain's read-outs and topographies come from its own seed; the noise from (brain, rep)
                    sim_brain.smooth_noise = lambda rng, shape, sd, g=noise_rng: smooth(g, shape, sd)
                    try:
                        y, times, n_ch = power_brains.meg_targets(
                            drivers, "forward_only", sim, {}, np.random.default_rng([7, brain]), operator
                        )
                    finally:
                        sim_brain.smooth_noise = smooth
                    Ys.append(y)
                    draws.append((brain, rep))
            width = Ys[0].shape[1]
            r = np.stack(
                [CrossValidatedRidge(X, folds, alphas).score(np.concatenate(Ys, 1))[0] for X in feats["gradients"]]
            )
            for i, (brain, rep) in enumerate(draws):
                curves = H.meg_curves(r[:, i * width : (i + 1) * width], n_ch, len(times))
                window = H.peak_latencies(curves, times, float(hierarchy["peak_fraction"]))
                centroid = H.centroid_latencies(curves, times, float(hierarchy.get("centroid_fraction", 0.5)))
                row = {
                    "model": model,
                    "noise": noise,
                    "brain": brain,
                    "rep": rep,
                    "temporal_score": H.temporal_score(depths, window),
                    "temporal_score_centroid": H.temporal_score(depths, centroid),
                    "peak_r_gradients": float(curves.max()),
                }
                results.append(row)
                print(
                    " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True
                )
            print(f"{model} noise {noise}: {time.perf_counter() - start:.0f} s", flush=True)
    summary = []
    for model in args.models:
        for noise in args.noise:
            for metric in ("temporal_score", "temporal_score_centroid"):
                table = np.array(
                    [
                        [
                            row[metric]
                            for row in results
                            if row["model"] == model and row["noise"] == noise and row["brain"] == b
                        ]
                        for b in range(args.brains)
                    ]
                )  # (brains, reps)
                within = float(np.nanmean(np.nanstd(table, axis=1, ddof=1)))
                between = float(np.nanstd(np.nanmean(table, axis=1), ddof=1))
                summary.append(
                    {
                        "model": model,
                        "noise": noise,
                        "metric": metric,
                        "sd_within_brain": within,
                        "sd_between_brain_means": between,
                    }
                )
                print(
                    f"{model} noise {noise} {metric}: SD within a brain {within:.2f}, SD of brain means {between:.2f}"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "machine": platform.platform(),
                "cpu_threads": torch.get_num_threads(),
                "args": {k: str(v) for k, v in vars(args).items()},
                "runs": results,
                "summary": summary,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
