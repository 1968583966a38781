"""Noise of the power grid's THINGS-EEG2 cells (`eeg`) matched to a published encoding accuracy (issue 25).

For each noise SD and seed, one planted `backprop` brain of the analysed model, built as the grid builds it
(``make_drivers``, ``meg_evoked`` on the 17 channels, ``rsvp_split``: a new image every 200 ms, white noise per sample
of the continuous recording): ``--n-train`` training images x 4 repetitions (the grid's first images) and ``--n-test``
further images x 80 repetitions, as THINGS-EEG2's test split. Measured:

- the grid's own metric: the activations' peak r (max over layers and times of the channel-mean cross-validated r)
  on the prepared training targets (``power.brains.prepare_eeg``), what power.csv reports as ``peak_r``;
- the published metrics, on the 100 Hz epochs as released: a ridge per layer fitted on the training images'
  4-repetition means, Pearson r per channel and time on the test images against the mean over all 80 repetitions
  (Brain-Score's ``Gifford2022``: score = (median r / median split-half ceiling, Spearman-Brown corrected)^2 over the
  17 channels x 0-0.59 s) and against the mean of a random half of them (the authors' ``correlation.py``: r per
  channel and time, averaged over channels, with the split-half noise ceiling), for the best layer.

    PYTHONPATH=workflow python benchmarks/eeg_noise.py --features results/power/features/demo_cnn.zarr \
        --out benchmarks/eeg_noise_demo_cnn.json

Writes JSON; never a test.
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
from snakemake.utils import validate

from gradbrain.data.things_eeg2 import layout as eeg2
from gradbrain.encoding.cv import CrossValidatedRidge, alpha_grid, make_folds, standardise
from gradbrain.encoding.ridge import fit_predict_gcv
from gradbrain.hierarchy import metrics as H
from gradbrain.power import brains as power_brains
from gradbrain.power import features as power_features
from gradbrain.simulation import brain as sim_brain
from gradbrain.simulation.rsvp import rsvp_split

REPO = Path(__file__).resolve().parents[1]
WINDOW = (0.0, 0.59)
"""Brain-Score's Gifford2022 window (s): 60 samples at 100 Hz from image onset."""


def columns_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of every column of ``a`` with the same column of ``b`` (NaN where one is constant)."""
    a, b = a - a.mean(0), b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(0) / den


def flat(epochs: np.ndarray, window: np.ndarray) -> np.ndarray:
    """(images, channels, times) -> (images, times * channels) time-major, restricted to ``window``."""
    return epochs[..., window].transpose(0, 2, 1).reshape(len(epochs), -1)


def halves(test: np.ndarray, rng: np.random.Generator, n_iter: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_iter`` random splits of the repetitions (axis 1) into two halves, each half's mean."""
    reps = test.shape[1]
    out = []
    for _ in range(n_iter):
        pick = rng.permutation(reps)
        out.append((test[:, pick[: reps // 2]].mean(1), test[:, pick[reps // 2 :]].mean(1)))
    return out


def one_brain(
    drivers: list, feats: list[np.ndarray], sim: dict, rng: np.random.Generator, args: argparse.Namespace, cfg: dict
) -> dict:
    """Every metric of one simulated participant (best layer for the published ones)."""
    n_train, n_ch = args.n_train, len(eeg2.CHANNELS)
    responses = sim_brain.meg_evoked("backprop", drivers, sim, power_brains.EEG_LAGS, n_ch, rng)
    noise = float(sim["noise"])
    train = rsvp_split(responses[:n_train], eeg2.TRAIN_REPS, rng, noise=noise).mean(1)
    test = rsvp_split(responses[n_train:], eeg2.TEST_REPS, rng, noise=noise)
    alphas = alpha_grid(cfg["encoding"])

    operator = power_brains.eeg_time_operator(cfg["power"].get("preprocessing", {}))
    Y = power_brains.prepare_eeg(train, operator)
    folds = make_folds(n_train, int(cfg["encoding"]["folds"]), int(cfg["encoding"]["seed"]))
    r_cv = np.stack([CrossValidatedRidge(X[:n_train], folds, alphas).score(Y)[0] for X in feats])
    grid_peak = float(H.meg_curves(r_cv, n_ch, len(operator[1])).max())

    times = eeg2.EPOCHS.times
    window = (times >= WINDOW[0] - 1e-9) & (times <= WINDOW[1] + 1e-9)
    y_train, y_all = flat(train, window), flat(test.mean(1), window)
    split = [(flat(a, window), flat(b, window)) for a, b in halves(test, rng, args.n_iter)]
    half_r = np.mean([columns_r(a, b) for a, b in split], axis=0)
    ceiling = np.median(2 * half_r / (1 + half_r))  # Brain-Score's internal consistency (Spearman-Brown)
    nc_low = H.meg_curves(half_r[None], n_ch, int(window.sum()))[0]
    nc_up = H.meg_curves(np.mean([columns_r(y_all, a) for a, _ in split], axis=0)[None], n_ch, int(window.sum()))[0]
    layers = []
    for X in feats:
        pred = _predict(X, y_train, n_train, alphas)
        pred_r = columns_r(pred, y_all)
        # the authors' r: the prediction against one half's mean, averaged over splits
        r_half = np.mean([columns_r(pred, a) for a, _ in split], axis=0)
        curve = H.meg_curves(r_half[None], n_ch, int(window.sum()))[0]
        ratio = float(np.median(pred_r) / ceiling)
        layers.append({"brainscore_ratio": ratio, "brainscore": ratio**2, "peak_r_half": float(curve.max()),
                       "peak_time": float(times[window][curve.argmax()])})  # fmt: skip
    best = max(range(len(layers)), key=lambda k: layers[k]["brainscore"])
    top = max(range(len(layers)), key=lambda k: layers[k]["peak_r_half"])
    t = int(np.argmin(np.abs(times[window] - layers[top]["peak_time"])))
    return {
        "grid_peak_r": grid_peak,
        "brainscore": layers[best]["brainscore"],
        "brainscore_ratio": layers[best]["brainscore_ratio"],
        "brainscore_layer": best,
        "ceiling_median": float(ceiling),
        "peak_r_half": layers[top]["peak_r_half"],
        "peak_time": layers[top]["peak_time"],
        "peak_layer": top,
        "noise_ceiling_low_at_peak": float(nc_low[t]),
        "noise_ceiling_up_at_peak": float(nc_up[t]),
        "noise_ceiling_low_max": float(nc_low.max()),
    }


def _predict(X: np.ndarray, y_train: np.ndarray, n_train: int, alphas: np.ndarray) -> np.ndarray:
    """Test-image predictions of a ridge fitted on the training images (alpha per target by LOO)."""
    Xs_train, Xs_test = standardise(X[:n_train], X[n_train:])
    pred, _ = fit_predict_gcv(Xs_train, y_train, Xs_test, alphas)
    return np.asarray(pred, dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=Path, required=True, help="a power features store (power_features rule)")
    ap.add_argument("--noise", type=float, nargs="+", default=[2.0, 4.0, 6.0, 9.0, 13.0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=900)
    ap.add_argument("--n-test", type=int, default=eeg2.N_TEST)
    ap.add_argument("--n-iter", type=int, default=10, help="random splits of the test repetitions")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"), set_default=True)  # the defaults
    n = args.n_train + args.n_test
    depths, feats = power_features.load_power_features(args.features, n)
    drivers = power_features.make_drivers({"model": (depths, feats)}, int(cfg["simulation"]["readout_components"]))
    sim = {"image_size": cfg["simulation"]["image_size"], **cfg["simulation"]["meg"]}
    result = {
        "features": str(args.features),
        "machine": f"{platform.node()} ({platform.machine()}, {torch.get_num_threads()} torch threads)",
        "n_train": args.n_train,
        "n_test": args.n_test,
        "seeds": args.seeds,
        "runs": [],
    }
    t0 = time.time()
    for noise in args.noise:
        for seed in range(args.seeds):
            rng = power_brains.subject_rng(int(cfg["power"]["seed"]), 20_000 + seed, 1)
            run = {"noise": noise, "seed": seed, **one_brain(drivers, feats["activations"], {**sim, "noise": noise},
                                                             rng, args, cfg)}  # fmt: skip
            result["runs"].append(run)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()}), flush=True)
    result["summary"] = {
        str(noise): {
            key: float(np.median([r[key] for r in result["runs"] if r["noise"] == noise]))
            for key in ("grid_peak_r", "brainscore", "peak_r_half", "noise_ceiling_low_at_peak", "ceiling_median")
        }
        for noise in args.noise
    }
    result["seconds"] = time.time() - t0
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
