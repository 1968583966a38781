"""The hierarchy stage: tidy tables of every per-subject metric, the group tests and the figure data.

results/hierarchy/scores.csv  dataset, model, subject, kind, metric, value (one row per number)
results/hierarchy/tests.csv   dataset, model, kind, metric, n_subjects, mean, sem, statistic, p, p_fdr
results/hierarchy/profiles.csv, latencies.csv, best_layers.csv, topographies.csv   what the figures draw (no refits
  in the report): best_layers carries each target's grid indices and mm coordinates for the brain maps, topographies
  the r of every sensor at the time sample nearest each layer's T_k for the MEG topomaps (docs/report.md)
results/hierarchy/verdicts.csv   for planted studies: each expected organisation and whether it was recovered
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradbrain import stats, store
from gradbrain.features.kinds import ACTIVATIONS, GRADIENTS
from gradbrain.hierarchy import metrics as H

log = logging.getLogger(__name__)
MAIN_METRICS = (
    "spatial_score", "spatial_score_spearman", "spatial_score_roi", "voxel_agreement", "spatial_divergence",
    "temporal_score", "temporal_divergence", "after_forward_fraction", "layer_identifiability", "gain_over_gradients",
)  # fmt: skip


@dataclass
class Fit:
    """One encoding store with its dataset, model and subject, and the brain store it was fitted to."""

    dataset: str
    model: str
    subject: str
    encoding: str
    brain: str


class Rows:
    """Collects (dataset, model, subject, kind, metric, value) rows."""

    def __init__(self, fit: Fit):
        self.fit, self.rows = fit, []

    def add(self, kind: str, metric: str, value: float) -> None:
        self.rows.append((self.fit.dataset, self.fit.model, self.fit.subject, kind, metric, float(value)))


def _load(fit: Fit) -> tuple[Any, Any, np.ndarray, list[str]]:
    enc, brain = store.open_group(fit.encoding), store.open_group(fit.brain)
    return enc, brain, np.asarray(enc.attrs["relative_depths"]), list(enc.attrs["kinds"])


def _spatial_rows(
    rows: Rows, kind: str, b: H.SpatialResult, depths: np.ndarray, h: np.ndarray, perms: np.ndarray, metric: str
) -> float:
    """Spatial score of a best-layer map over its significant targets and its permutation p; returns the score."""
    sig = b.significant
    s = H.spatial_score(b.best_depth[sig], h[sig])
    rows.add(kind, metric, s)
    rows.add(kind, f"{metric}_p", stats.permutation_p(s, H.spatial_null(b.best_index[sig], depths, h[sig], perms)))
    return s


def _agreement_rows(
    rows: Rows, kind: str, a: H.SpatialResult, g: H.SpatialResult, depths: np.ndarray, perms: np.ndarray, metric: str
) -> np.ndarray:
    """Voxel agreement of two best-layer maps over the targets significant in both, and its permutation p;
    returns that target mask."""
    both = a.significant & g.significant
    agree = stats.pearson(a.best_depth[both], g.best_depth[both])
    rows.add(kind, metric, agree)
    rows.add(
        kind,
        f"{metric}_p",
        stats.permutation_p(agree, H.agreement_null(a.best_index[both], g.best_index[both], depths, perms)),
    )
    return both


def _spatial_divergence_rows(
    rows: Rows,
    kind: str,
    r: dict[str, np.ndarray],
    spatial: dict[str, float],
    depths: np.ndarray,
    h: np.ndarray,
    n: int,
    alpha: float,
    n_perm: int,
    seed: int,
    metric: str,
) -> None:
    """D_S = S_a - S_kind from the spatial scores already computed, and its kind-swap permutation p."""

    def divergence(ra: np.ndarray, rg: np.ndarray) -> float:
        ba, bg = H.best_layers(ra, depths, n, alpha), H.best_layers(rg, depths, n, alpha)
        return H.spatial_score(ba.best_depth[ba.significant], h[ba.significant]) - H.spatial_score(
            bg.best_depth[bg.significant], h[bg.significant]
        )

    d = spatial[ACTIVATIONS] - spatial[kind]
    rows.add(kind, metric, d)
    null = H.kind_swap_null(divergence, r[ACTIVATIONS], r[kind], min(n_perm, 200), seed)
    rows.add(kind, f"{metric}_p", stats.permutation_p(d, null))


def _temporal_divergence_rows(
    rows: Rows, kind: str, lat: dict[str, np.ndarray], depths: np.ndarray, perms: np.ndarray, suffix: str = ""
) -> None:
    """D_T = T_kind + T_a with its layer-shuffle p (the kind's latencies shuffled), and the after-forward fraction."""
    t_a = H.temporal_score(depths, lat[ACTIVATIONS])
    d = H.temporal_score(depths, lat[kind]) + t_a
    rows.add(kind, f"temporal_divergence{suffix}", d)
    rows.add(
        kind, f"temporal_divergence{suffix}_p", stats.permutation_p(d, t_a + H.temporal_null(depths, lat[kind], perms))
    )
    rows.add(kind, f"after_forward_fraction{suffix}", H.after_forward_fraction(lat[kind], lat[ACTIVATIONS]))


def fmri_metrics(fit: Fit, cfg: dict[str, Any], extra: dict[str, list]) -> list[tuple]:
    """Spatial score (Pearson, Spearman, ROI-level), voxel agreement and spatial divergence of one subject."""
    enc, brain, depths, kinds = _load(fit)
    tg = brain["targets"]
    h = np.asarray(tg["distance_v1"][...], dtype=float)
    roi, hemi = store.read_array(tg, "roi"), store.read_array(tg, "hemi")
    ijk = np.asarray(tg["ijk"][...], dtype=int)
    xyz = np.asarray(tg["coords_mm"][...], dtype=float)
    space = str(brain.attrs.get("space", "func1pt8mm"))
    n, alpha = int(enc.attrs["n_train"]), float(cfg["fdr_alpha"])
    n_perm, n_boot, seed = int(cfg["permutations"]), int(cfg["bootstraps"]), int(cfg["seed"])
    perms = stats.layer_permutations(len(depths), n_perm, seed)
    rows, r, best, spatial = Rows(fit), {}, {}, {}
    for kind in kinds:
        r[kind] = np.asarray(enc[f"r/{kind}"][...], dtype=float)
        b = best[kind] = H.best_layers(r[kind], depths, n, alpha)
        sig = b.significant
        spatial[kind] = _spatial_rows(rows, kind, b, depths, h, perms, "spatial_score")
        d_sig, h_sig = b.best_depth[sig], h[sig]
        lo, hi = stats.bootstrap_ci(
            lambda i, d=d_sig, h=h_sig: H.spatial_score(d[i], h[i]), int(sig.sum()), n_boot, seed
        )
        rows.add(kind, "spatial_score_ci_low", lo)
        rows.add(kind, "spatial_score_ci_high", hi)
        rows.add(kind, "spatial_score_spearman", H.spatial_score_spearman(b.best_depth[sig], h[sig]))
        rows.add(kind, "spatial_score_roi", H.spatial_score_roi(b.best_depth[sig], h[sig], roi[sig]))
        rows.add(kind, "n_significant", sig.sum())
        rows.add(kind, "best_r_median", np.median(b.best_r))
        _identifiability_rows(rows, enc, kind)
        for layer, depth, values in zip(enc.attrs["layers"], depths, r[kind], strict=True):
            for name in np.unique(roi):
                extra["profiles"].append(
                    (
                        fit.dataset,
                        fit.model,
                        fit.subject,
                        kind,
                        layer,
                        depth,
                        "roi",
                        name,
                        float(values[roi == name].mean()),
                    )
                )
        extra["best_layers"].append(pd.DataFrame({
            "dataset": fit.dataset, "model": fit.model, "subject": fit.subject, "kind": kind,
            "target": np.arange(len(h)), "roi": roi, "hemi": hemi, "distance_v1": h,
            "best_depth": b.best_depth, "best_r": b.best_r, "significant": b.significant,
            "space": space, "i": ijk[:, 0], "j": ijk[:, 1], "k": ijk[:, 2],
            "x_mm": xyz[:, 0], "y_mm": xyz[:, 1], "z_mm": xyz[:, 2],
        }))  # fmt: skip
    for kind in kinds:
        if kind == ACTIVATIONS or ACTIVATIONS not in kinds:
            continue
        both = _agreement_rows(rows, kind, best[ACTIVATIONS], best[kind], depths, perms, "voxel_agreement")
        rows.add(kind, "n_significant_both", both.sum())
        if kind != GRADIENTS and GRADIENTS in kinds:
            rows.add(kind, "gain_over_gradients", H.fit_gain(r[kind], r[GRADIENTS]))
        _spatial_divergence_rows(rows, kind, r, spatial, depths, h, n, alpha, n_perm, seed, "spatial_divergence")
    return rows.rows


def meg_metrics(fit: Fit, cfg: dict[str, Any], extra: dict[str, list]) -> list[tuple]:
    """Temporal score, temporal divergence and after-forward fraction of one subject."""
    enc, brain, depths, kinds = _load(fit)
    n_ch, n_t = int(brain.attrs["n_channels"]), int(brain.attrs["n_times"])
    times = np.asarray(brain["targets"]["time"][...], dtype=float)
    channels = store.read_array(brain["targets"], "channel")
    frac, seed = float(cfg["peak_fraction"]), int(cfg["seed"])
    perms = stats.layer_permutations(len(depths), int(cfg["permutations"]), seed)
    rows, lat, curves_of, r_of = Rows(fit), {}, {}, {}
    for kind in kinds:
        r = r_of[kind] = np.asarray(enc[f"r/{kind}"][...], dtype=float)
        curves = curves_of[kind] = H.meg_curves(r, n_ch, n_t)
        lat[kind] = H.peak_latencies(curves, times, frac)
        t = H.temporal_score(depths, lat[kind])
        rows.add(kind, "temporal_score", t)
        rows.add(kind, "temporal_score_p", stats.permutation_p(t, H.temporal_null(depths, lat[kind], perms)))
        per_sensor = r.reshape(len(depths), n_t, n_ch)
        lo, hi = stats.bootstrap_ci(
            lambda i, s=per_sensor: H.temporal_score(depths, H.peak_latencies(s[:, :, i].mean(-1), times, frac)),
            n_ch,
            int(cfg["bootstraps"]),
            seed,
        )
        rows.add(kind, "temporal_score_ci_low", lo)
        rows.add(kind, "temporal_score_ci_high", hi)
        rows.add(kind, "peak_r", curves.max())
        _identifiability_rows(rows, enc, kind)
        for layer, depth, curve, tk, sensors in zip(
            enc.attrs["layers"], depths, curves, lat[kind], per_sensor, strict=True
        ):
            extra["latencies"].append((fit.dataset, fit.model, fit.subject, kind, layer, depth, tk))
            at = int(np.argmin(np.abs(times - tk)))  # T_k is a mean of times: draw the sample nearest to it
            extra["topographies"].append(pd.DataFrame({
                "dataset": fit.dataset, "model": fit.model, "subject": fit.subject, "kind": kind, "layer": layer,
                "depth": depth, "time": times[at], "channel": channels, "value": sensors[at],
            }))  # fmt: skip
            for time, value in zip(times, curve, strict=True):
                extra["profiles"].append((fit.dataset, fit.model, fit.subject, kind, layer, depth, "time", time, value))
    for kind in kinds:
        if kind == ACTIVATIONS or ACTIVATIONS not in kinds:
            continue
        _temporal_divergence_rows(rows, kind, lat, depths, perms)
        if kind != GRADIENTS and GRADIENTS in kinds:
            rows.add(kind, "gain_over_gradients", H.fit_gain(r_of[kind], r_of[GRADIENTS]))
    return rows.rows


ROBUST_VARIANTS = (  # (metric suffix, score maps, latency estimator) of the estimators beside the paper's
    ("centroid", "r", "centroid"), ("own", "r_own", "peak"), ("own_centroid", "r_own", "centroid"),
)  # fmt: skip
ROBUST_METRICS = tuple(
    f"{m}_{suffix}" for suffix, _, _ in ROBUST_VARIANTS
    for m in ("temporal_score", "temporal_divergence", "after_forward_fraction")
) + ("spatial_score_own", "voxel_agreement_own", "spatial_divergence_own")  # fmt: skip


def robust_meg_metrics(fit: Fit, cfg: dict[str, Any]) -> list[tuple]:
    """Temporal metrics of the robust estimators (docs/metrics.md): the centroid latency of each layer's curve
    (suffix ``_centroid``), the paper's peak window on the curves of each layer's own contribution (``_own``, when
    the encoding store has ``r_own``), and both (``_own_centroid``)."""
    enc, brain, depths, kinds = _load(fit)
    n_ch, n_t = int(brain.attrs["n_channels"]), int(brain.attrs["n_times"])
    times = np.asarray(brain["targets"]["time"][...], dtype=float)
    seed = int(cfg["seed"])
    perms = stats.layer_permutations(len(depths), int(cfg["permutations"]), seed)
    latency = {
        "peak": lambda c: H.peak_latencies(c, times, float(cfg["peak_fraction"])),
        "centroid": lambda c: H.centroid_latencies(c, times, float(cfg.get("centroid_fraction", 0.5))),
    }
    rows = Rows(fit)
    for suffix, maps, estimator in ROBUST_VARIANTS:
        if not all(f"{maps}/{kind}" in enc for kind in kinds):
            continue
        lat = {}
        for kind in kinds:
            curves = H.meg_curves(np.asarray(enc[f"{maps}/{kind}"][...], dtype=float), n_ch, n_t)
            lat[kind] = latency[estimator](curves)
            t = H.temporal_score(depths, lat[kind])
            rows.add(kind, f"temporal_score_{suffix}", t)
            null = H.temporal_null(depths, lat[kind], perms)
            rows.add(kind, f"temporal_score_{suffix}_p", stats.permutation_p(t, null))
            if maps == "r_own" and estimator == "peak":
                rows.add(kind, "peak_r_own", curves.max())
        for kind in kinds:
            if kind == ACTIVATIONS or ACTIVATIONS not in kinds:
                continue
            _temporal_divergence_rows(rows, kind, lat, depths, perms, f"_{suffix}")
    return rows.rows


def robust_fmri_metrics(fit: Fit, cfg: dict[str, Any]) -> list[tuple]:
    """Spatial score, voxel agreement and spatial divergence from the best layers of each layer's own contribution
    (suffix ``_own``; nothing when the encoding store has no ``r_own``)."""
    enc, brain, depths, kinds = _load(fit)
    if not all(f"r_own/{kind}" in enc for kind in kinds):
        return []
    h = np.asarray(brain["targets"]["distance_v1"][...], dtype=float)
    n, alpha, seed = int(enc.attrs["n_train"]), float(cfg["fdr_alpha"]), int(cfg["seed"])
    perms = stats.layer_permutations(len(depths), int(cfg["permutations"]), seed)
    rows, r, best, spatial = Rows(fit), {}, {}, {}
    for kind in kinds:
        r[kind] = np.asarray(enc[f"r_own/{kind}"][...], dtype=float)
        b = best[kind] = H.best_layers(r[kind], depths, n, alpha)
        sig = b.significant
        spatial[kind] = _spatial_rows(rows, kind, b, depths, h, perms, "spatial_score_own")
        rows.add(kind, "n_significant_own", sig.sum())
    for kind in kinds:
        if kind == ACTIVATIONS or ACTIVATIONS not in kinds:
            continue
        _agreement_rows(rows, kind, best[ACTIVATIONS], best[kind], depths, perms, "voxel_agreement_own")
        _spatial_divergence_rows(
            rows, kind, r, spatial, depths, h, n, alpha, int(cfg["permutations"]), seed, "spatial_divergence_own"
        )
    return rows.rows


def _identifiability_rows(rows: Rows, enc, kind: str) -> None:
    ident = enc.attrs.get(f"identifiability_{kind}")
    if ident:
        rows.add(kind, "layer_identifiability", ident["layer_identifiability"])
        rows.add(kind, "identifiability_target_r", ident["target_r"])


def group_tests(scores: pd.DataFrame) -> pd.DataFrame:
    """Wilcoxon signed-rank across subjects for every (dataset, model, kind, metric), BH-FDR over the table.

    Each row also carries the mean layer identifiability of its (dataset, model, kind), so that a divergence is read
    beside how well the model's layers can be told apart at all (NaN where it was not computed).
    """
    main = scores[scores.metric.isin(MAIN_METRICS + ROBUST_METRICS)]
    out = []
    for (dataset, model, kind, metric), frame in main.groupby(["dataset", "model", "kind", "metric"], sort=True):
        out.append(
            {
                "dataset": dataset,
                "model": model,
                "kind": kind,
                "metric": metric,
                **stats.group_test(frame.value.to_numpy()),
            }
        )
    tests = pd.DataFrame(
        out, columns=["dataset", "model", "kind", "metric", "n_subjects", "mean", "sem", "statistic", "p"]
    )
    tests["p_fdr"] = stats.fdr(tests.p.to_numpy()) if len(tests) else []
    ident = (
        scores[scores.metric == "layer_identifiability"]
        .groupby(["dataset", "model", "kind"])
        .value.mean()
        .rename("layer_identifiability")
    )
    return tests.join(ident, on=["dataset", "model", "kind"])


EXPECTATIONS = {  # the planted organisation of each scenario, as per-subject thresholds (issue 2's acceptance)
    "backprop": [
        ("activations", "spatial_score", ">=", 0.5),
        ("gradients", "spatial_score", ">=", 0.5),
        ("gradients", "voxel_agreement", ">=", 0.5),
        ("activations", "temporal_score", ">=", 0.8),
        ("gradients", "temporal_score", "<=", -0.8),
        ("gradients", "after_forward_fraction", ">=", 0.9),
    ],
    "misaligned": [
        ("gradients", "spatial_divergence", ">=", 0.4),
        ("gradients", "temporal_divergence", ">=", 1.0),
    ],
    "forward_only": [("activations", "spatial_score", ">=", 0.5), ("activations", "temporal_score", ">=", 0.8)],
}
# a learning rule's errors are backward signals like the gradients: its planted brain gets backprop's expectations
# with the rule's kind in place of the gradients, and it must fit better than the gradients (and worse under backprop)
EXPECTATIONS["feedback_alignment"] = [
    ("feedback_alignment" if kind == "gradients" else kind, metric, op, threshold)
    for kind, metric, op, threshold in EXPECTATIONS["backprop"]
] + [("feedback_alignment", "gain_over_gradients", ">=", 0.0)]
EXPECTATIONS["backprop"].append(("feedback_alignment", "gain_over_gradients", "<=", 0.0))


def verdicts(scores: pd.DataFrame, scenarios: dict[str, str]) -> pd.DataFrame:
    """Each planted expectation per (dataset, model, subject) and whether the pipeline recovered it."""
    out = []
    for dataset, scenario in scenarios.items():
        for kind, metric, op, threshold in EXPECTATIONS.get(scenario, []):
            sel = scores[(scores.dataset == dataset) & (scores.kind == kind) & (scores.metric == metric)]
            for row in sel.itertuples():
                ok = row.value >= threshold if op == ">=" else row.value <= threshold
                out.append(
                    {
                        "dataset": dataset,
                        "scenario": scenario,
                        "model": row.model,
                        "subject": row.subject,
                        "kind": kind,
                        "metric": metric,
                        "expected": f"{op} {threshold}",
                        "value": row.value,
                        "recovered": bool(ok),
                    }
                )
    return pd.DataFrame(
        out, columns=["dataset", "scenario", "model", "subject", "kind", "metric", "expected", "value", "recovered"]
    )


def new_extra() -> dict[str, list]:
    """Empty collectors for the per-target tables the metric functions fill beside their rows."""
    return {"profiles": [], "latencies": [], "best_layers": [], "topographies": []}


def hierarchy_tables(fits: list[Fit], cfg: dict[str, Any], scenarios: dict[str, str], outdir: str | Path) -> None:
    """Compute every table of the hierarchy stage and write them to ``outdir``."""
    outdir = Path(outdir)
    extra = new_extra()
    rows = []
    for fit in fits:
        modality = store.open_group(fit.brain).attrs["modality"]
        rows += (fmri_metrics if modality == "fmri" else meg_metrics)(fit, cfg, extra)
        rows += (robust_fmri_metrics if modality == "fmri" else robust_meg_metrics)(fit, cfg)
        log.info("%s %s sub-%s done", fit.dataset, fit.model, fit.subject)
    scores = pd.DataFrame(rows, columns=["dataset", "model", "subject", "kind", "metric", "value"])
    tables = {
        "scores.csv": scores,
        "tests.csv": group_tests(scores),
        "verdicts.csv": verdicts(scores, scenarios),
        "profiles.csv": pd.DataFrame(
            extra["profiles"],
            columns=["dataset", "model", "subject", "kind", "layer", "depth", "axis", "position", "value"],
        ),
        "latencies.csv": pd.DataFrame(
            extra["latencies"], columns=["dataset", "model", "subject", "kind", "layer", "depth", "peak_latency"]
        ),
        "best_layers.csv": pd.concat(extra["best_layers"]) if extra["best_layers"] else pd.DataFrame(),
        "topographies.csv": pd.concat(extra["topographies"]) if extra["topographies"] else pd.DataFrame(),
    }
    for name, frame in tables.items():
        store.write_table(frame, outdir / name)
