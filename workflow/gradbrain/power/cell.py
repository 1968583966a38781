"""One grid cell of the power analysis: ``seeds`` x ``max(n_subjects)`` planted brains simulated in memory, encoded
with the encoding stage's cross-validated ridge from every layer (and every layer's own contribution), and scored by
the hierarchy stage's per-subject functions (``hierarchy.subject``) on arrays.

Seeds vary the brain (read-out weights, topographies, noise); the stimuli are the first ``n_images`` crops of one
seeded set, so the features and folds are shared and each layer needs one set of fold SVDs for all the cell's
subjects.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from gradbrain.data.things_eeg2.layout import CHANNELS as EEG2_CHANNELS
from gradbrain.encoding.contributions import own_contributions
from gradbrain.encoding.cv import CrossValidatedRidge, alpha_grid, make_folds
from gradbrain.encoding.joint import JointFit, band_weights, check_partition_fits, control_scores, joint_fit
from gradbrain.encoding.partition import control_space
from gradbrain.features.kinds import ACTIVATIONS
from gradbrain.hierarchy.subject import SubjectScores, subject_metrics
from gradbrain.hierarchy.unique import Partition
from gradbrain.power.brains import (
    eeg_targets,
    eeg_time_operator,
    fmri_layout,
    fmri_targets,
    meg_targets,
    meg_time_operator,
    subject_rng,
)
from gradbrain.power.features import load_placebos, load_power_features, make_drivers
from gradbrain.power.grid import cell_name, driver_names, simulation_block
from gradbrain.simulation import brain as sim_brain
from gradbrain.simulation.scenarios import BRAINS

log = logging.getLogger(__name__)
CELL_COLUMNS = ["model", "modality", "scenario", "noise", "n_images", "seed", "subject", "kind", "metric", "value"]


def run_cell(cell: dict[str, Any], feature_paths: dict[str, str], config: dict[str, Any]) -> pd.DataFrame:
    """Per (seed, subject, kind, metric) values of one grid cell (columns ``CELL_COLUMNS``).

    ``config`` holds the workflow's ``simulation``, ``encoding``, ``hierarchy`` and ``power`` sections.
    """
    power, encoding = config["power"], config["encoding"]
    hierarchy = {**config["hierarchy"], **power.get("hierarchy", {})}
    modality, scenario, n = cell["modality"], cell["scenario"], int(cell["n_images"])
    sim = {
        "image_size": config["simulation"].get("image_size", 64),
        **config["simulation"][simulation_block(modality)],
        "noise": float(cell["noise"]),
    }
    names = cell.get("drivers") or driver_names(power, cell["model"], scenario)  # grid.cells resolves them
    loaded = {m: load_power_features(feature_paths[m], n) for m in {cell["model"], *names}}
    depths, feats = loaded[cell["model"]]
    if _partitioned(power, encoding, feats):
        dims = [X.shape[1] for X in feats[ACTIVATIONS]]
        check_partition_fits(n, dims, encoding["partition"], f"power cell {cell_name(cell)} (or power.partition=false)")
    components = None if BRAINS[scenario].full_rank else int(config["simulation"].get("readout_components", 64))
    drivers = make_drivers({m: loaded[m] for m in names}, components)
    alphas = alpha_grid(encoding)
    solver = {k: encoding[k] for k in ("backend", "device", "dtype")}
    kinds = tuple(feats)  # every kind of the features store (power_kinds of the grid)
    maps = {"r": feats} | (
        {"r_own": {kind: own_contributions(feats[kind], kind, alphas, **solver) for kind in kinds}}
        if power.get("own_contribution", False)
        else {}
    )
    folds = make_folds(n, int(encoding["folds"]), int(encoding["seed"]))
    n_subjects = max(int(k) for k in power["n_subjects"])
    layers = [f"layer{k:02d}" for k in range(len(depths))]
    layout = fmri_layout(sim) if modality == "fmri" else None
    operator = {"meg": meg_time_operator, "eeg": eeg_time_operator}.get(modality, lambda _: None)(
        power.get("preprocessing", {})
    )
    subjects = [(run, subject) for run in range(int(power["seeds"])) for subject in range(1, n_subjects + 1)]
    if modality == "meg":
        channels = np.array(sim_brain.spread_channels(int(sim["n_sensors"])))
        shape = {"n_channels": len(channels), "n_times": len(operator[1])}
        targets = {"time": np.asarray(operator[1], dtype=np.float32), "channel": channels}
        Ys = [
            meg_targets(drivers, scenario, sim, {}, subject_rng(power["seed"], run, subject), operator)[0]
            for run, subject in subjects
        ]
    elif modality == "eeg":
        channels = np.array(EEG2_CHANNELS)
        shape = {"n_channels": len(channels), "n_times": len(operator[1])}
        targets = {"time": np.asarray(operator[1], dtype=np.float32), "channel": channels}
        Ys = [
            eeg_targets(drivers, scenario, sim, subject_rng(power["seed"], run, subject), operator)
            for run, subject in subjects
        ]
    else:
        shape = {}
        targets = {k: layout[k] for k in ("distance_v1", "roi", "hemi", "ijk", "coords_mm")}
        Ys = [
            fmri_targets(drivers, scenario, sim, layout, subject_rng(power["seed"], run, subject))
            for run, subject in subjects
        ]
    # every seed's subjects side by side: each layer's fold SVDs are computed once per cell
    Y, width = np.concatenate(Ys, axis=1), Ys[0].shape[1]
    del Ys
    fitted = {
        f"{m}/{kind}": [CrossValidatedRidge(X, folds, alphas, **solver, target_batch=encoding.get("target_batch"))
                        .score(Y) for X in fs[kind]]
        for m, fs in maps.items() for kind in kinds
    }  # fmt: skip
    r = {key: np.stack([s.r for s in scores]) for key, scores in fitted.items()}
    r2 = {key: np.stack([s.r2 for s in scores]) for key, scores in fitted.items()}
    log.info("%s: %d subjects encoded", cell_name(cell), len(subjects))
    placebos = load_placebos(feature_paths[cell["model"]], n)
    joint = _joint_fits(feats, depths, Y, folds, alphas, solver, encoding, power, width, len(subjects), cell_name(cell),
                        placebos)  # fmt: skip
    rows = []
    for i, (run, subject) in enumerate(subjects):
        cols = slice(i * width, (i + 1) * width)
        scores = {k: v[:, cols].astype(np.float32) for k, v in r.items()}  # as an encoding store holds them
        subject_scores = SubjectScores(
            dataset="power", model=cell["model"], subject=f"{run}-{subject}", layers=layers,
            modality="fmri" if modality == "fmri" else "meg",  # EEG is scored as MEG: sensors x time
            depths=depths, kinds=list(kinds), n_train=n, targets=targets, **shape,
            r={kind: scores[f"r/{kind}"] for kind in kinds},
            r_own={kind: scores[f"r_own/{kind}"] for kind in kinds if f"r_own/{kind}" in scores},
            partition={kind: Partition(control_r2[cols], fit.r2_joint[:, cols], r2[f"r/{kind}"][:, cols],
                                       fit.f_p[:, cols], fit.excess_r2[:, cols], fit.layer_p[:, i],
                                       (fit.identifiability or {}).get("unique_identifiability", np.nan),
                                       fit.layer_excess[:, i],
                                       None if fit.placebo_excess is None else fit.placebo_excess[:, :, i])
                       for kind, (control_r2, fit) in joint.items()},
        )  # fmt: skip
        for _, _, _, kind, metric, value, _ in subject_metrics(subject_scores, hierarchy):
            rows.append((cell["model"], modality, scenario, float(cell["noise"]), n, run, subject, kind, metric, value))
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def _joint_fits(feats: dict[str, list[np.ndarray]], depths: np.ndarray, Y: np.ndarray, folds: np.ndarray,
                alphas: np.ndarray,
                solver: dict[str, Any], encoding: dict[str, Any], power: dict[str, Any], width: int, n_subjects: int,
                label: str, placebos: list[list[np.ndarray]] | None = None,
                ) -> dict[str, tuple[np.ndarray, JointFit]]:  # fmt: skip
    """Per compared kind, the control space's R^2 and the joint fits of every layer, all subjects side by side (the
    summed F-test per subject); nothing when ``power.partition`` is off."""
    if not _partitioned(power, encoding, feats):
        return {}
    part = encoding["partition"]
    control, _ = control_space(feats[ACTIVATIONS], int(part["control_components"]))
    control_r2, _ = control_scores(control, Y, folds, alphas, solver)
    groups = np.repeat(np.arange(n_subjects), width)
    return {
        kind: (control_r2, joint_fit(control, layers, Y, folds, alphas, band_weights(part),
                                     int(part["gradient_components"]), solver, groups=groups, label=f"{label} {kind}",
                                     depths=depths, control_scores_r2=control_r2, seed=int(encoding["seed"]),
                                     placebos=placebos))
        for kind, layers in feats.items() if kind != ACTIVATIONS
    }  # fmt: skip


def _partitioned(power: dict[str, Any], encoding: dict[str, Any], feats: dict[str, list[np.ndarray]]) -> bool:
    """Whether the cell fits the partition: ``power.partition`` and ``encoding.partition.enabled`` both on."""
    part = encoding["partition"]
    return bool(power.get("partition", True) and part.get("enabled", True) and ACTIVATIONS in feats)
