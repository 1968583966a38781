"""Every per-subject metric of the hierarchy stage, from one subject's scores held as arrays (no I/O).

``SubjectScores`` is what the stage reads from an encoding store and its brain store (``hierarchy.stage``) and what
the power analysis builds in memory for its simulated subjects; ``subject_metrics`` turns it into the rows of
``scores.csv`` (dataset, model, subject, kind, metric, value) and the per-target rows the figures draw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gradbrain import stats
from gradbrain.encoding.significance import BestLayers, best_layers
from gradbrain.features.kinds import ACTIVATIONS, GRADIENTS
from gradbrain.hierarchy import metrics as H
from gradbrain.hierarchy import nulls
from gradbrain.hierarchy import unique as U
from gradbrain.hierarchy.unique import Partition

ROBUST_VARIANTS = (  # (metric suffix, score maps, latency estimator) of the estimators beside the paper's
    ("centroid", "r", "centroid"), ("own", "r_own", "peak"), ("own_centroid", "r_own", "centroid"),
)  # fmt: skip
ROBUST_METRICS = tuple(
    f"{m}_{suffix}" for suffix, _, _ in ROBUST_VARIANTS
    for m in ("temporal_score", "temporal_divergence", "after_forward_fraction")
) + ("spatial_score_own", "voxel_agreement_own", "spatial_divergence_own")  # fmt: skip


@dataclass
class SubjectScores:
    """One subject's encoding scores with its targets' metadata.

    ``r`` and ``r_own``: per kind, (n_layers, n_targets) cross-validated r of every layer and of every layer's own
    contribution (empty when not fitted). ``targets``: fMRI ``distance_v1``, ``roi``, ``hemi``, ``ijk``,
    ``coords_mm``; MEG ``time`` and ``channel`` (targets time-major, t * n_channels + c). ``identifiability``: per
    kind, the layer-identifiability result of the encoding stage; ``partition``: per compared kind, its variance
    partition beyond the activations (``hierarchy.unique.Partition``; empty when not fitted).
    """

    dataset: str
    model: str
    subject: str
    modality: str
    layers: list[str]
    depths: np.ndarray
    kinds: list[str]
    n_train: int
    r: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    r_own: dict[str, np.ndarray] = field(default_factory=dict)
    identifiability: dict[str, dict[str, Any]] = field(default_factory=dict)
    partition: dict[str, Partition] = field(default_factory=dict)
    n_channels: int = 0
    n_times: int = 0
    space: str = "func1pt8mm"

    def __post_init__(self) -> None:
        self.depths = np.asarray(self.depths, dtype=float)
        self.r = {k: np.asarray(v, dtype=float) for k, v in self.r.items()}
        self.r_own = {k: np.asarray(v, dtype=float) for k, v in self.r_own.items()}

    def compared(self) -> list[str]:
        """The kinds compared with the activations (every kind but the activations, when those were fitted)."""
        return [k for k in self.kinds if k != ACTIVATIONS] if ACTIVATIONS in self.kinds else []


class Rows:
    """Collects (dataset, model, subject, kind, metric, value, note) rows of one subject; ``note`` says why a value is
    undefined (NaN), empty otherwise."""

    def __init__(self, s: SubjectScores):
        self.key, self.rows = (s.dataset, s.model, s.subject), []

    def add(self, kind: str, metric: str, value: float, note: str = "") -> None:
        value = float(value)
        self.rows.append((*self.key, kind, metric, value, note if not np.isfinite(value) else ""))


def new_extra() -> dict[str, list]:
    """Empty collectors for the per-target tables the metric functions fill beside their rows."""
    return {"profiles": [], "latencies": [], "best_layers": [], "topographies": [], "claims": [], "partition": []}


def _spatial_rows(
    rows: Rows, kind: str, b: BestLayers, depths: np.ndarray, h: np.ndarray, perms: np.ndarray, metric: str
) -> float:
    """Spatial score of a best-layer map over its significant targets and its permutation p; returns the score."""
    sig = b.significant
    s = H.spatial_score(b.best_depth[sig], h[sig])
    rows.add(kind, metric, s, H.undefined(b.best_depth[sig], h[sig], "best-layer depth", "significant voxels"))
    rows.add(kind, f"{metric}_p", stats.permutation_p(s, nulls.spatial_null(b.best_index[sig], depths, h[sig], perms)))
    return s


def _agreement_rows(
    rows: Rows, kind: str, a: BestLayers, g: BestLayers, depths: np.ndarray, perms: np.ndarray, metric: str
) -> np.ndarray:
    """Voxel agreement of two best-layer maps over the targets significant in both, and its permutation p;
    returns that target mask."""
    both = a.significant & g.significant
    agree = H.voxel_agreement(a.best_depth[both], g.best_depth[both])
    note = H.undefined(
        g.best_depth[both], a.best_depth[both], f"{kind} best-layer depth", "voxels significant for both"
    )
    rows.add(kind, metric, agree, note)
    null = nulls.agreement_null(a.best_index[both], g.best_index[both], depths, perms)
    rows.add(kind, f"{metric}_p", stats.permutation_p(agree, null))
    return both


def _spatial_divergence_rows(rows: Rows, kind: str, spatial: dict[str, float], metric: str) -> None:
    """D_S = S_a - S_kind from the spatial scores already computed: the paper's number, with no test (a brain without
    gradient-specific signal gives D_S about S_a; the test of divergence is on the unique map, hierarchy.unique)."""
    d = H.spatial_divergence(spatial[ACTIVATIONS], spatial[kind])
    rows.add(kind, metric, d, "a spatial score is undefined (see the spatial_score rows)")


def _temporal_divergence_rows(
    rows: Rows, kind: str, lat: dict[str, np.ndarray], depths: np.ndarray, perms: np.ndarray, suffix: str = ""
) -> None:
    """D_T = T_kind + T_a and the after-forward fraction: the paper's numbers, with no test (a brain without
    gradient-specific signal gives D_T about T_a; the test of divergence is on the unique signal, hierarchy.unique)."""
    t_a = H.temporal_score(depths, lat[ACTIVATIONS])
    d = H.temporal_divergence(H.temporal_score(depths, lat[kind]), t_a)
    rows.add(kind, f"temporal_divergence{suffix}", d, "a temporal score is undefined (see the temporal_score rows)")
    rows.add(kind, f"after_forward_fraction{suffix}", H.after_forward_fraction(lat[kind], lat[ACTIVATIONS]))


def _identifiability_rows(rows: Rows, s: SubjectScores, kind: str) -> None:
    ident = s.identifiability.get(kind)
    if ident:
        rows.add(kind, "layer_identifiability", ident["layer_identifiability"])
        rows.add(kind, "identifiability_target_r", ident["target_r"])


def _permutations(s: SubjectScores, cfg: dict[str, Any]) -> np.ndarray:
    return stats.layer_permutations(len(s.depths), int(cfg["permutations"]), int(cfg["seed"]))


def fmri_metrics(s: SubjectScores, cfg: dict[str, Any], extra: dict[str, list]) -> list[tuple]:
    """Spatial score (Pearson, Spearman, ROI-level), voxel agreement and spatial divergence of one subject."""
    tg, depths = s.targets, s.depths
    h = np.asarray(tg["distance_v1"], dtype=float)
    roi, hemi = np.asarray(tg["roi"]), np.asarray(tg["hemi"])
    ijk, xyz = np.asarray(tg["ijk"], dtype=int), np.asarray(tg["coords_mm"], dtype=float)
    alpha, n_boot, seed = float(cfg["fdr_alpha"]), int(cfg["bootstraps"]), int(cfg["seed"])
    perms = _permutations(s, cfg)
    key = {"dataset": s.dataset, "model": s.model, "subject": s.subject}
    rows, best, spatial = Rows(s), {}, {}
    for kind in s.kinds:
        b = best[kind] = best_layers(s.r[kind], depths, s.n_train, alpha)
        sig = b.significant
        spatial[kind] = _spatial_rows(rows, kind, b, depths, h, perms, "spatial_score")
        d_sig, h_sig = b.best_depth[sig], h[sig]
        lo, hi = stats.bootstrap_ci(
            lambda i, d=d_sig, h=h_sig: H.spatial_score(d[i], h[i]), int(sig.sum()), n_boot, seed
        )
        rows.add(kind, "spatial_score_ci_low", lo)
        rows.add(kind, "spatial_score_ci_high", hi)
        rows.add(kind, "spatial_score_spearman", H.spatial_score_spearman(d_sig, h_sig))
        rows.add(kind, "spatial_score_roi", H.spatial_score_roi(d_sig, h_sig, roi[sig]))
        rows.add(kind, "n_significant", sig.sum())
        rows.add(kind, "best_r_median", np.median(b.best_r))
        _identifiability_rows(rows, s, kind)
        for layer, depth, values in zip(s.layers, depths, s.r[kind], strict=True):
            for name in np.unique(roi):
                extra["profiles"].append(
                    (s.dataset, s.model, s.subject, kind, layer, depth, "roi", name, float(values[roi == name].mean()))
                )
        extra["best_layers"].append(pd.DataFrame({
            **key, "kind": kind, "target": np.arange(len(h)), "roi": roi, "hemi": hemi, "distance_v1": h,
            "best_depth": b.best_depth, "best_r": b.best_r, "significant": b.significant,
            "space": s.space, "i": ijk[:, 0], "j": ijk[:, 1], "k": ijk[:, 2],
            "x_mm": xyz[:, 0], "y_mm": xyz[:, 1], "z_mm": xyz[:, 2],
        }))  # fmt: skip
    for kind in s.compared():
        both = _agreement_rows(rows, kind, best[ACTIVATIONS], best[kind], depths, perms, "voxel_agreement")
        rows.add(kind, "n_significant_both", both.sum())
        if kind != GRADIENTS and GRADIENTS in s.kinds:
            rows.add(kind, "gain_over_gradients", H.fit_gain(s.r[kind], s.r[GRADIENTS]))
        _spatial_divergence_rows(rows, kind, spatial, "spatial_divergence")
    return rows.rows


def meg_metrics(s: SubjectScores, cfg: dict[str, Any], extra: dict[str, list]) -> list[tuple]:
    """Temporal score, temporal divergence and after-forward fraction of one subject."""
    n_ch, n_t, depths = s.n_channels, s.n_times, s.depths
    times = np.asarray(s.targets["time"], dtype=float)
    channels = np.asarray(s.targets["channel"])
    frac, seed = float(cfg["peak_fraction"]), int(cfg["seed"])
    perms = _permutations(s, cfg)
    rows, lat = Rows(s), {}
    for kind in s.kinds:
        r = s.r[kind]
        curves = H.meg_curves(r, n_ch, n_t)
        lat[kind] = H.peak_latencies(curves, times, frac)
        t = H.temporal_score(depths, lat[kind])
        rows.add(kind, "temporal_score", t, H.undefined(lat[kind], depths, "peak latency T_k", "layers"))
        rows.add(kind, "temporal_score_p", stats.permutation_p(t, nulls.temporal_null(depths, lat[kind], perms)))
        per_sensor = r.reshape(len(depths), n_t, n_ch)
        lo, hi = stats.bootstrap_ci(
            lambda i, p=per_sensor: H.temporal_score(depths, H.peak_latencies(p[:, :, i].mean(-1), times, frac)),
            n_ch, int(cfg["bootstraps"]), seed,
        )  # fmt: skip
        rows.add(kind, "temporal_score_ci_low", lo)
        rows.add(kind, "temporal_score_ci_high", hi)
        rows.add(kind, "peak_r", curves.max())
        _identifiability_rows(rows, s, kind)
        for layer, depth, curve, tk, sensors in zip(s.layers, depths, curves, lat[kind], per_sensor, strict=True):
            extra["latencies"].append((s.dataset, s.model, s.subject, kind, layer, depth, tk))
            at = int(np.argmin(np.abs(times - tk)))  # T_k is a mean of times: draw the sample nearest to it
            extra["topographies"].append(pd.DataFrame({
                "dataset": s.dataset, "model": s.model, "subject": s.subject, "kind": kind, "layer": layer,
                "depth": depth, "time": times[at], "channel": channels, "value": sensors[at],
            }))  # fmt: skip
            for time, value in zip(times, curve, strict=True):
                extra["profiles"].append((s.dataset, s.model, s.subject, kind, layer, depth, "time", time, value))
    for kind in s.compared():
        _temporal_divergence_rows(rows, kind, lat, depths, perms)
        if kind != GRADIENTS and GRADIENTS in s.kinds:
            rows.add(kind, "gain_over_gradients", H.fit_gain(s.r[kind], s.r[GRADIENTS]))
    return rows.rows


def robust_meg_metrics(s: SubjectScores, cfg: dict[str, Any]) -> list[tuple]:
    """Temporal metrics of the robust estimators (docs/metrics.md): the centroid latency of each layer's curve
    (suffix ``_centroid``), the paper's peak window on the curves of each layer's own contribution (``_own``, when
    ``r_own`` was fitted), and both (``_own_centroid``)."""
    times = np.asarray(s.targets["time"], dtype=float)
    perms = _permutations(s, cfg)
    latency: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "peak": lambda c: H.peak_latencies(c, times, float(cfg["peak_fraction"])),
        "centroid": lambda c: H.centroid_latencies(c, times, float(cfg.get("centroid_fraction", 0.5))),
    }
    rows = Rows(s)
    for suffix, maps, estimator in ROBUST_VARIANTS:
        scores = s.r if maps == "r" else s.r_own
        if not all(kind in scores for kind in s.kinds):
            continue
        lat = {}
        for kind in s.kinds:
            curves = H.meg_curves(scores[kind], s.n_channels, s.n_times)
            lat[kind] = latency[estimator](curves)
            t = H.temporal_score(s.depths, lat[kind])
            rows.add(kind, f"temporal_score_{suffix}", t, H.undefined(lat[kind], s.depths, "latency T_k", "layers"))
            null = nulls.temporal_null(s.depths, lat[kind], perms)
            rows.add(kind, f"temporal_score_{suffix}_p", stats.permutation_p(t, null))
            if maps == "r_own" and estimator == "peak":
                rows.add(kind, "peak_r_own", curves.max())
        for kind in s.compared():
            _temporal_divergence_rows(rows, kind, lat, s.depths, perms, f"_{suffix}")
    return rows.rows


def robust_fmri_metrics(s: SubjectScores, cfg: dict[str, Any]) -> list[tuple]:
    """Spatial score, voxel agreement and spatial divergence from the best layers of each layer's own contribution
    (suffix ``_own``; nothing when ``r_own`` was not fitted)."""
    if not all(kind in s.r_own for kind in s.kinds):
        return []
    h = np.asarray(s.targets["distance_v1"], dtype=float)
    perms = _permutations(s, cfg)
    rows, best, spatial = Rows(s), {}, {}
    for kind in s.kinds:
        b = best[kind] = best_layers(s.r_own[kind], s.depths, s.n_train, float(cfg["fdr_alpha"]))
        spatial[kind] = _spatial_rows(rows, kind, b, s.depths, h, perms, "spatial_score_own")
        rows.add(kind, "n_significant_own", b.significant.sum())
    for kind in s.compared():
        _agreement_rows(rows, kind, best[ACTIVATIONS], best[kind], s.depths, perms, "voxel_agreement_own")
        _spatial_divergence_rows(rows, kind, spatial, "spatial_divergence_own")
    return rows.rows


def unique_metrics(s: SubjectScores, cfg: dict[str, Any], extra: dict[str, list]) -> list[tuple]:
    """The test of gradient-specific signal, the metrics of the unique maps and the claims of every partitioned kind
    (hierarchy.unique); the claims and the variance parts by ROI or time go to ``extra``."""
    rows, perms, alpha = Rows(s), _permutations(s, cfg), float(cfg["fdr_alpha"])
    for kind, part in s.partition.items():

        def add(metric: str, value: float, note: str = "", kind: str = kind) -> None:
            rows.add(kind, metric, value, note)

        out = (U.fmri_unique if s.modality == "fmri" else U.meg_unique)(s, kind, part, cfg, add, perms)
        rows.add(kind, "gradient_signal_p", out["p_gate"])
        rows.add(kind, "gradient_signal", float(out["p_gate"] < alpha))
        gate = out["signal"]
        rows.add(kind, "gradient_signal_p_control", gate.p_control)
        rows.add(kind, "gradient_signal_t_placebo", gate.t_placebo, "no placebo gradients")
        rows.add(kind, "gradient_signal_p_placebo", gate.p_placebo, "no placebo gradients")
        rows.add(kind, "unique_identifiability", part.identifiability, "not computed")
        for name, values in (
            ("unique", part.unique),
            ("shared", part.shared),
            ("unique_activations", part.unique_activations),
        ):
            rows.add(kind, f"{name}_r2_median", np.median(np.nanmax(values, 0)))
        claims = U.claims(s.modality, out, alpha)
        for claim, _, holds, _ in claims[1:]:  # the first is gradient_signal
            rows.add(kind, claim, float(holds))
        extra["claims"] += [(s.dataset, s.model, s.subject, kind, s.modality, *c, U.verdict(claims)) for c in claims]
        axis, positions = ("roi", np.asarray(s.targets["roi"])) if s.modality == "fmri" else (
            "time", np.repeat(np.asarray(s.targets["time"], dtype=float), s.n_channels))  # fmt: skip
        for layer, depth, k in zip(s.layers, s.depths, range(len(s.layers)), strict=True):
            for position in dict.fromkeys(positions):
                at = positions == position
                for name, values in (("unique_gradients", part.unique), ("shared", part.shared),
                                     ("unique_activations", part.unique_activations)):  # fmt: skip
                    extra["partition"].append((s.dataset, s.model, s.subject, kind, layer, depth, axis, position,
                                               name, float(np.mean(values[k, at]))))  # fmt: skip
    return rows.rows


def subject_metrics(s: SubjectScores, cfg: dict[str, Any], extra: dict[str, list] | None = None) -> list[tuple]:
    """Every per-subject metric (the paper's, the robust estimators and the gradient-specific signal's)."""
    extra = new_extra() if extra is None else extra
    if s.modality == "fmri":
        rows = fmri_metrics(s, cfg, extra) + robust_fmri_metrics(s, cfg)
    else:
        rows = meg_metrics(s, cfg, extra) + robust_meg_metrics(s, cfg)
    return rows + unique_metrics(s, cfg, extra)
