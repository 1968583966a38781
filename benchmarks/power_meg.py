"""Issue 9's headline: at peak MEG r about 0.1 with 4,000 images, does any temporal estimator recover the planted
backward order of the gradients (temporal score <= -0.8) in at least 80 % of seeds?

For each model: pooled features of ``--n-images`` seeded crops (cached), the model as the only driver of a planted
``backprop`` MEG brain (simulation.meg of config/config.yaml), the sensor noise calibrated so that the activations'
peak r (max over layers and times of the sensor-mean r) is about ``--target-r``, then ``--seeds`` brains, each encoded
from every gradient layer and every layer's own contribution and scored by the hierarchy stage's functions
(the paper's 95 % window, the centroid latency, own contributions with either; the own-contribution fits, which
double the cost, on the first ``--own-seeds`` seeds only). Writes JSON; never a test.

    PYTHONPATH=workflow python benchmarks/power_meg.py --weights-dir results/models --out benchmarks/power_meg.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from gradbrain.encoding.contributions import own_contributions
from gradbrain.encoding.cv import CrossValidatedRidge, alpha_grid, make_folds
from gradbrain.hierarchy import metrics as H
from gradbrain.hierarchy.subject import SubjectScores, subject_metrics
from gradbrain.models.catalogue import model_spec
from gradbrain.power import brains as power_brains
from gradbrain.power import features as power_features
from gradbrain.simulation import brain as sim_brain

REPO = Path(__file__).resolve().parents[1]
ESTIMATORS = ("temporal_score", "temporal_score_centroid", "temporal_score_own", "temporal_score_own_centroid")


def features(model: str, weights_dir: Path, out_dir: Path, n: int, cfg: dict) -> Path:
    """The model's power features on ``n`` crops, extracted once."""
    from gradbrain.models.load import load_model

    path = out_dir / f"{model}.zarr"
    if not path.exists():
        spec = model_spec(model, cfg["models"].get(model) or {})
        loaded = load_model(spec, weights_path=str(weights_dir / f"{model}.pt"))
        power_features.extract_power_features(
            path, loaded, n, cfg["simulation"]["image_size"], seed=cfg["power"]["image_seed"]
        )
    return path


def fit_maps(maps: dict[str, list[np.ndarray]], Y: np.ndarray, folds: np.ndarray, alphas: np.ndarray) -> dict:
    return {
        key: np.stack([CrossValidatedRidge(X, folds, alphas).score(Y)[0] for X in layers])
        for key, layers in maps.items()
    }


def score(r: dict, depths: np.ndarray, times: np.ndarray, n_ch: int, n: int, kinds: tuple, hierarchy: dict) -> dict:
    """The hierarchy stage's per-subject MEG metrics of one simulated subject, as {(kind, metric): value}."""
    subject = SubjectScores(
        dataset="power", model="model", subject="s", modality="meg", layers=[f"l{k}" for k in range(len(depths))],
        depths=depths, kinds=list(kinds), n_train=n, n_channels=n_ch, n_times=len(times),
        r={kind: r[f"r/{kind}"].astype(np.float32) for kind in kinds},
        r_own={kind: r[f"r_own/{kind}"].astype(np.float32) for kind in kinds if f"r_own/{kind}" in r},
        targets={"time": times.astype(np.float32), "channel": np.array(sim_brain.spread_channels(n_ch))},
    )  # fmt: skip
    rows = subject_metrics(subject, hierarchy)
    return {(kind, metric): value for *_, kind, metric, value, _ in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["demo_cnn", "demo_vit"])
    ap.add_argument("--weights-dir", type=Path, default=REPO / "results" / "models")
    ap.add_argument("--features-dir", type=Path, default=REPO / "results" / "power" / "bench_features")
    ap.add_argument("--n-images", type=int, default=4000)
    ap.add_argument("--target-r", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--own-seeds", type=int, default=3, help="seeds that also fit the own contributions (costly)")
    ap.add_argument("--noise", type=float, default=None, help="skip the calibration and use this noise SD")
    ap.add_argument("--scenario", default="backprop", help="planted scenario (forward_only: the false positives)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "power_meg.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    hierarchy = {**cfg["hierarchy"], "bootstraps": 0}
    alphas = alpha_grid(cfg["encoding"])
    folds = make_folds(args.n_images, int(cfg["encoding"]["folds"]), int(cfg["encoding"]["seed"]))
    pre = cfg["power"].get("preprocessing", {})
    machine = f"{platform.node()} ({platform.machine()}, {torch.get_num_threads()} torch threads)"
    result = {
        "scenario": args.scenario,
        "machine": machine,
        "n_images": args.n_images,
        "target_r": args.target_r,
        "seeds": args.seeds,
        "models": {},
    }
    for model in args.models:
        t0 = time.time()
        depths, feats = power_features.load_power_features(
            features(model, args.weights_dir, args.features_dir, args.n_images, cfg), args.n_images
        )
        drivers = power_features.make_drivers({model: (depths, feats)}, int(cfg["simulation"]["readout_components"]))
        sim = {"image_size": cfg["simulation"]["image_size"], **cfg["simulation"]["meg"]}
        t_features = time.time() - t0

        # calibration: the activations' peak r at a trial noise, rescaled as r = s / sqrt(s^2 + noise^2)
        noise, calibration = args.noise, []
        for _ in range(0 if args.noise else 2):
            noise = noise or 8.0
            Y, times, n_ch = power_brains.meg_targets(
                drivers,
                args.scenario,
                {**sim, "noise": noise},
                pre,
                power_brains.subject_rng(cfg["power"]["seed"], 10_000, 1),
            )
            r = fit_maps({"r/activations": feats["activations"]}, Y, folds, alphas)["r/activations"]
            peak = float(H.meg_curves(r, n_ch, len(times)).max())
            calibration.append({"noise": noise, "peak_r_activations": peak})
            print(model, "calibration", calibration[-1], flush=True)
            s = noise * peak / np.sqrt(1 - peak**2)
            noise = float(s * np.sqrt(1 / args.target_r**2 - 1))
        t_calibration = time.time() - t0 - t_features

        own = own_contributions(feats["gradients"], "gradients", alphas)
        runs = []
        for seed in range(args.seeds):
            Y, times, n_ch = power_brains.meg_targets(
                drivers,
                args.scenario,
                {**sim, "noise": noise},
                pre,
                power_brains.subject_rng(cfg["power"]["seed"], seed, 1),
            )
            maps = {"r/gradients": feats["gradients"]} | ({"r_own/gradients": own} if seed < args.own_seeds else {})
            r = fit_maps(maps, Y, folds, alphas)
            values = score(r, depths, times, n_ch, args.n_images, ("gradients",), hierarchy)
            curves = H.meg_curves(r["r/gradients"], n_ch, len(times))
            runs.append(
                {
                    "seed": seed,
                    "peak_r_gradients": values[("gradients", "peak_r")],
                    **{m: values[("gradients", m)] for m in ESTIMATORS if ("gradients", m) in values},
                    **{f"{m}_p": values[("gradients", f"{m}_p")] for m in ESTIMATORS if ("gradients", m) in values},
                    "latency_peak": H.peak_latencies(curves, times, hierarchy["peak_fraction"]).round(3).tolist(),
                    "latency_centroid": H.centroid_latencies(curves, times).round(3).tolist(),
                }
            )
            print(model, seed, {k: round(v, 3) for k, v in runs[-1].items() if k in ESTIMATORS}, flush=True)
        result["models"][model] = {
            "noise": noise,
            "calibration": calibration,
            "planted_gradient_latency": (lambda lat: None if lat is None else lat.round(3).tolist())(
                sim_brain.latencies(args.scenario, depths, sim)[1]
            ),
            "runs": runs,
            "recovered_fraction": {m: float(np.mean([run[m] <= -0.8 for run in runs if m in run])) for m in ESTIMATORS},
            "n_seeds": {m: sum(m in run for run in runs) for m in ESTIMATORS},
            "median": {
                m: float(np.median([run[m] for run in runs if m in run])) for m in ESTIMATORS + ("peak_r_gradients",)
            },
            "seconds": {"features": t_features, "calibration": t_calibration, "total": time.time() - t0},
        }
        print(model, json.dumps(result["models"][model]["recovered_fraction"]), flush=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
