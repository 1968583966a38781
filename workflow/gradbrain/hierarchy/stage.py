"""The hierarchy stage's edge: read each subject's encoding and brain stores, write the tidy tables.

results/hierarchy/scores.csv  dataset, model, subject, kind, metric, value (one row per number; hierarchy.subject)
results/hierarchy/tests.csv   dataset, model, kind, metric, n_subjects, mean, sem, statistic, p, p_fdr, scope (group)
results/hierarchy/profiles.csv, latencies.csv, best_layers.csv, topographies.csv   what the figures draw (no refits
  in the report): best_layers carries each target's grid indices and mm coordinates for the brain maps, topographies
  the r of every sensor at the time sample nearest each layer's T_k for the MEG topomaps (docs/report.md)
results/hierarchy/verdicts.csv   for planted studies: each expected organisation and whether it was recovered
results/hierarchy/claims.csv     per subject and compared kind: the claims in order (gradient-specific signal,
  organised as backprop, diverges from backprop), each with its p and whether it holds, and the verdict
results/hierarchy/partition.csv  the three variance parts (unique to the kind, shared, unique to the activations) per
  layer and ROI (fMRI) or time (MEG), for the report's figure
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradbrain import store
from gradbrain.hierarchy.group import group_tests
from gradbrain.hierarchy.subject import SubjectScores, new_extra, subject_metrics
from gradbrain.hierarchy.unique import Partition
from gradbrain.hierarchy.verdicts import verdicts

log = logging.getLogger(__name__)
SCORE_COLUMNS = ["dataset", "model", "subject", "kind", "metric", "value", "note"]
CLAIM_COLUMNS = ["dataset", "model", "subject", "kind", "modality", "claim", "p", "holds", "note", "verdict"]
PARTITION_COLUMNS = ["dataset", "model", "subject", "kind", "layer", "depth", "axis", "position", "part", "value"]
FMRI_TARGETS = ("distance_v1", "roi", "hemi", "ijk", "coords_mm")
MEG_TARGETS = ("time", "channel")


@dataclass
class Fit:
    """One encoding store with its dataset, model and subject, and the brain store it was fitted to."""

    dataset: str
    model: str
    subject: str
    encoding: str
    brain: str


def _optional(group, name: str) -> np.ndarray | None:
    return np.asarray(group[name][...]) if name in group else None


def load_scores(fit: Fit) -> SubjectScores:
    """One subject's scores and target metadata from its encoding store and brain store."""
    enc, brain = store.open_group(fit.encoding), store.open_group(fit.brain)
    kinds = list(enc.attrs["kinds"])
    modality = str(brain.attrs["modality"])
    names = FMRI_TARGETS if modality == "fmri" else MEG_TARGETS
    own = {kind: enc[f"r_own/{kind}"][...] for kind in kinds if f"r_own/{kind}" in enc}
    partition = {
        kind: Partition(enc["partition/control_r2"][...], enc[f"partition/{kind}/r2_joint"][...],
                        enc[f"r2/{kind}"][...],
                        *(enc[f"partition/{kind}/{n}"][...] for n in ("f_p", "excess_r2", "layer_p")),
                        identifiability=enc.attrs[f"partition_{kind}"].get("unique_identifiability", float("nan")),
                        layer_excess=_optional(enc, f"partition/{kind}/layer_excess"),
                        placebo_excess=_optional(enc, f"partition/{kind}/placebo_excess"))
        for kind in kinds if f"partition/{kind}/r2_joint" in enc
    }  # fmt: skip
    return SubjectScores(
        dataset=fit.dataset, model=fit.model, subject=fit.subject, modality=modality,
        layers=list(enc.attrs["layers"]), depths=np.asarray(enc.attrs["relative_depths"]), kinds=kinds,
        n_train=int(enc.attrs["n_train"]), r={kind: enc[f"r/{kind}"][...] for kind in kinds},
        r_own=own if len(own) == len(kinds) else {}, partition=partition,
        identifiability={k: enc.attrs[f"identifiability_{k}"] for k in kinds if enc.attrs.get(f"identifiability_{k}")},
        targets={name: store.read_array(brain["targets"], name) for name in names},
        n_channels=int(brain.attrs.get("n_channels", 0)), n_times=int(brain.attrs.get("n_times", 0)),
        space=str(brain.attrs.get("space", "func1pt8mm")),
    )  # fmt: skip


def hierarchy_tables(fits: list[Fit], cfg: dict[str, Any], scenarios: dict[str, str], outdir: str | Path) -> None:
    """Compute every table of the hierarchy stage and write them to ``outdir``."""
    outdir = Path(outdir)
    extra = new_extra()
    rows = []
    for fit in fits:
        rows += subject_metrics(load_scores(fit), cfg, extra)
        log.info("%s %s sub-%s done", fit.dataset, fit.model, fit.subject)
    scores = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    profile_columns = ["dataset", "model", "subject", "kind", "layer", "depth", "axis", "position", "value"]
    latency_columns = ["dataset", "model", "subject", "kind", "layer", "depth", "peak_latency"]
    tables = {
        "scores.csv": scores,
        "tests.csv": group_tests(scores, float(cfg["fdr_alpha"])),
        "verdicts.csv": verdicts(scores, scenarios),
        "profiles.csv": pd.DataFrame(extra["profiles"], columns=profile_columns),
        "latencies.csv": pd.DataFrame(extra["latencies"], columns=latency_columns),
        "best_layers.csv": pd.concat(extra["best_layers"]) if extra["best_layers"] else pd.DataFrame(),
        "topographies.csv": pd.concat(extra["topographies"]) if extra["topographies"] else pd.DataFrame(),
        "claims.csv": pd.DataFrame(extra["claims"], columns=CLAIM_COLUMNS),
        "partition.csv": pd.DataFrame(extra["partition"], columns=PARTITION_COLUMNS),
    }
    for name, frame in tables.items():
        store.write_table(frame, outdir / name)
