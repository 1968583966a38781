"""encode_fmri / encode_meg: Pearson r per (kind, layer, target) for one subject and model.

Writes results/encoding/{dataset}/{model}/sub-{subject}.zarr: r/<kind>, r2/<kind> and alpha/<kind> (n_layers,
n_targets), the held-out r when the brain store has a test split, the layer identifiability of each kind (attrs),
r_own/<kind>: the same encoding of each layer's own contribution (contributions.py) for the modalities in
``encoding.own_contribution``, and, with ``encoding.partition``, the control space's fit (partition/control_r2,
control_r) and per compared kind the joint fits and the test of its signal beyond the activations
(partition/<kind>/r2_joint, r_joint, f_p, excess_r2 (n_layers, n_targets), layer_stat, layer_p (n_layers,); joint.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gradbrain import store
from gradbrain.encoding.contributions import own_contributions
from gradbrain.encoding.cv import CrossValidatedRidge, alpha_grid, check_folds, heldout_scores, make_folds
from gradbrain.encoding.identifiability import linear_cka, planted_targets, recovery
from gradbrain.encoding.joint import JointFit, band_weights, check_partition_fits, control_scores, joint_fit
from gradbrain.encoding.partition import control_space
from gradbrain.encoding.significance import best_layers
from gradbrain.features.kinds import ACTIVATIONS, check_encoded_kinds, placebo_key

log = logging.getLogger(__name__)


def align(feature_ids: np.ndarray, brain_ids: np.ndarray, features_path: str) -> np.ndarray:
    """Row of each brain stimulus in the features store; a missing stimulus is an error naming both files."""
    lookup = {s: i for i, s in enumerate(feature_ids)}
    missing = [s for s in brain_ids if s not in lookup]
    if missing:
        raise KeyError(
            f"{features_path} lacks {len(missing)} stimuli of the brain data (e.g. {missing[:3]}); "
            "re-run extract_features for this dataset (delete the features store) so it covers every subject"
        )
    return np.array([lookup[s] for s in brain_ids])


def split_rows(Y: Any, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training and test rows of a (zarr) target array as float32, read without a full copy in memory.

    A THINGS-MEG subject's targets are 22,248 x 76,151 float32 (6.8 GB): reading the whole array and then indexing
    its rows would hold it twice.
    """
    out = []
    for mask in (train, test):
        rows = np.flatnonzero(mask)
        if len(rows) == len(mask):
            block = Y[...]
        elif len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            block = Y[int(rows[0]) : int(rows[-1]) + 1]
        else:
            block = Y.get_orthogonal_selection((rows, slice(None))) if len(rows) else np.zeros((0, Y.shape[1]))
        out.append(np.asarray(block, dtype=np.float32))
    return out[0], out[1]


def encode_subject(features_path: str, brain_path: str, out: str | Path, cfg: dict[str, Any]) -> Path:
    """Cross-validated ridge from every layer of both kinds onto one subject's targets."""
    t0 = time.time()
    brain = store.open_group(brain_path)
    feats = store.open_group(features_path)
    split = store.read_array(brain, "split")
    rows = align(store.read_array(feats, "stimulus_id"), store.read_array(brain, "stimulus_id"), features_path)
    train, test = split == "train", split == "test"
    Y_train, Y_test = split_rows(brain["Y"], train, test)
    check_folds(int(train.sum()), int(cfg["folds"]), str(brain_path))
    folds = make_folds(int(train.sum()), int(cfg["folds"]), int(cfg["seed"]))
    alphas = alpha_grid(cfg)
    solver = {k: cfg[k] for k in ("backend", "device", "dtype")} | {"target_batch": cfg.get("target_batch")}
    layers, depths = list(feats.attrs["layers"]), np.asarray(feats.attrs["relative_depths"])
    check_encoded_kinds(cfg.get("kinds", []), feats.attrs["kinds"])
    kinds = [k for k in feats.attrs["kinds"] if k in cfg.get("kinds", feats.attrs["kinds"])]
    partition = _partition_kinds(cfg, kinds)
    if partition:
        dims = [feats[ACTIVATIONS][name].shape[1] for name in layers]
        check_partition_fits(int(train.sum()), dims, cfg["partition"], brain_path)
    with store.atomic_group(out) as group:
        for kind in kinds:
            all_rows = [layer_reader(feats, kind, name, rows) for name in layers]
            train_layers = [layer_reader(feats, kind, name, rows[train]) for name in layers]
            r_all, r2_all, alpha_all, r_test, fits = [], [], [], [], []
            budget = float(cfg.get("cache_gb", 2.0)) * 2**30
            for name, read in zip(layers, all_rows, strict=True):
                X = read()
                X_train = X[train]
                cv = CrossValidatedRidge(X_train, folds, alphas, **solver)
                scores = cv.score(Y_train)
                r, alpha = scores.r, scores.alpha
                r_all.append(r)
                r2_all.append(scores.r2)
                alpha_all.append(alpha)
                budget -= cv.nbytes
                fits.append(cv if budget > 0 else None)  # kept for the identifiability pass while memory allows
                if test.any():
                    r_test.append(heldout_scores(X_train, Y_train, X[test], Y_test, alphas, **solver)[0])
                log.info("%s %s: median r %.3f, max r %.3f", kind, name, np.median(r), np.max(r))
                del X, X_train, cv
            r_all = np.stack(r_all).astype(np.float32)
            store.write_array(group, f"r/{kind}", r_all)
            store.write_array(group, f"alpha/{kind}", np.stack(alpha_all).astype(np.float32))
            store.write_array(group, f"r2/{kind}", np.stack(r2_all).astype(np.float32))
            if r_test:
                store.write_array(group, f"r_test/{kind}", np.stack(r_test).astype(np.float32))
            refits = [_fit_of(cv, read, folds, alphas, solver) for cv, read in zip(fits, train_layers, strict=True)]
            del fits
            n_train = int(train.sum())
            group.attrs[f"identifiability_{kind}"] = _identifiability(train_layers, refits, depths, r_all, cfg, n_train)
            if brain.attrs["modality"] in cfg.get("own_contribution", ()):
                r_own = own_scores([read() for read in all_rows], kind, train, Y_train, folds, alphas, solver)
                store.write_array(group, f"r_own/{kind}", r_own)
            if kind == ACTIVATIONS and partition:
                control, kept = control_space(all_rows, int(cfg["partition"]["control_components"]))
                control = control[train]
                r2_control, r_control = control_scores(control, Y_train, folds, alphas, solver)
                store.write_array(group, "partition/control_r2", r2_control.astype(np.float32))
                store.write_array(group, "partition/control_r", r_control.astype(np.float32))
                group.attrs["partition"] = {**cfg["partition"], "control_kept": kept, "kinds": partition}
            elif kind in partition:
                fit = joint_fit(control, train_layers, Y_train, folds, alphas, band_weights(cfg["partition"]),
                                int(cfg["partition"]["gradient_components"]), solver, label=kind, depths=depths,
                                control_scores_r2=r2_control, seed=int(cfg["seed"]),
                                placebos=placebo_layers(feats, layers, rows, train))  # fmt: skip
                write_joint(group, kind, fit)
        group.attrs.update(
            {
                "layers": layers,
                "relative_depths": depths.tolist(),
                "kinds": kinds,
                "n_train": int(train.sum()),
                "n_test": int(test.sum()),
                "folds": int(cfg["folds"]),
                "alphas": alphas.tolist(),
                "objective": feats.attrs["objective"],
                "pooling": feats.attrs["pooling"],
                "weights_id": feats.attrs["weights_id"],
                "modality": brain.attrs["modality"],
                "own_contribution": brain.attrs["modality"] in cfg.get("own_contribution", ()),
                "seconds": time.time() - t0,
            }
        )
    return Path(out)


def _partition_kinds(cfg: dict[str, Any], kinds: list[str]) -> list[str]:
    """The kinds jointly fitted with the control space (``encoding.partition``): every kind compared with the
    activations, or none when the partition is off or the activations were not extracted."""
    part = cfg.get("partition") or {}
    if not part.get("enabled") or ACTIVATIONS not in kinds:
        return []
    return [k for k in kinds if k != ACTIVATIONS]


def layer_reader(feats: Any, key: str, name: str, rows: np.ndarray) -> Callable[[], np.ndarray]:
    """A reader of the rows ``rows`` of layer ``name`` of ``key`` (a kind or placebo) in a features store, float32:
    the encoding holds one layer at a time (about 91 MB for 22,248 images x 1024 features), whatever the layers."""
    return lambda: np.asarray(feats[key][name][...], dtype=np.float32)[rows]


def placebo_layers(feats: Any, layers: list[str], rows: np.ndarray, train: np.ndarray) -> list[list[Any]] | None:
    """Readers of the training rows of every placebo gradient's layers in a features store (features/placebo.py),
    or None where the store has none; each reads its layer when called."""
    count = int(feats.attrs.get("placebos", 0))
    if not count:
        return None
    return [[layer_reader(feats, placebo_key(j), name, rows[train]) for name in layers] for j in range(count)]


def write_joint(group: Any, kind: str, fit: JointFit) -> None:
    """The joint fits and the F-tests of one kind under ``partition/<kind>/`` of an encoding store, with the mean
    excess partial R^2 of the kind's layers (L,) and of its placebo gradients' (J, L) for the placebo test."""
    store.write_array(group, f"partition/{kind}/r2_joint", fit.r2_joint.astype(np.float32))
    store.write_array(group, f"partition/{kind}/r_joint", fit.r_joint.astype(np.float32))
    store.write_array(group, f"partition/{kind}/f_p", fit.f_p.astype(np.float64))
    store.write_array(group, f"partition/{kind}/excess_r2", fit.excess_r2.astype(np.float32))
    store.write_array(group, f"partition/{kind}/layer_stat", fit.layer_stat[:, 0])
    store.write_array(group, f"partition/{kind}/layer_p", fit.layer_p[:, 0])
    store.write_array(group, f"partition/{kind}/layer_excess", fit.layer_excess[:, 0])
    if fit.placebo_excess is not None:
        store.write_array(group, f"partition/{kind}/placebo_excess", fit.placebo_excess[:, :, 0])
    dfs = {"df_num": fit.df_num.tolist(), "df_den": fit.df_den.tolist()}
    group.attrs[f"partition_{kind}"] = {**dfs, **(fit.identifiability or {})}


def own_scores(
    X_layers: list[np.ndarray],
    kind: str,
    train: np.ndarray,
    Y_train: np.ndarray,
    folds: np.ndarray,
    alphas: np.ndarray,
    solver: dict[str, Any],
) -> np.ndarray:
    """Cross-validated r (n_layers, n_targets) of every layer's own contribution (innovations over all stimuli)."""
    own = own_contributions(X_layers, kind, alphas, **{k: solver[k] for k in ("backend", "device", "dtype")})
    r = [CrossValidatedRidge(X[train], folds, alphas, **solver).score(Y_train)[0] for X in own]
    log.info("%s own contributions: max r per layer %s", kind, np.round([np.max(x) for x in r], 3).tolist())
    return np.stack(r).astype(np.float32)


def _fit_of(
    cv: CrossValidatedRidge | None, read: Callable[[], np.ndarray], folds: np.ndarray, alphas: np.ndarray,
    solver: dict[str, Any],
) -> Callable[[], CrossValidatedRidge]:  # fmt: skip
    """The layer's cross-validated fit: the one kept from the first pass, else refitted from its reader when asked."""
    return (lambda: cv) if cv is not None else (lambda: CrossValidatedRidge(read(), folds, alphas, **solver))


def _identifiability(
    X_layers: list[Callable[[], np.ndarray]], fits: list[Callable[[], CrossValidatedRidge]], depths: np.ndarray,
    r_all: np.ndarray, cfg: dict[str, Any], n: int,
) -> dict[str, Any]:  # fmt: skip
    """Planted-layer recovery at the typical best r of the significant real targets, and linear CKA (one or two
    layers and one fit in memory at a time); ``n`` training images."""
    best = best_layers(r_all, depths, n)
    observed = best.best_r[best.significant]
    target_r = float(np.median(observed)) if len(observed) else 0.1
    Y, planted = planted_targets(X_layers, target_r, int(cfg.get("identifiability_targets", 16)), int(cfg["seed"]))
    r = np.stack([fit().score(Y)[0] for fit in fits])
    result = recovery(r, planted, depths, target_r)
    result["cka"] = np.round(linear_cka(X_layers), 4).tolist()
    result["n_significant"] = int(best.significant.sum())
    return result
