"""The gradient-specific signal: its test per subject, the hierarchy metrics of the unique maps, and the claims in
order (pure functions of a ``SubjectScores`` with the encoding stage's partition; formulas: docs/metrics.md).

Per compared kind g (the gradients, or a learning rule's errors) and layer k: U_k = R^2(C + G_k) - R^2(C), the
cross-validated variance that layer k adds to the control space C of every activation layer. The claims come in
order, and a later one is made only where the earlier holds:

1. gradient-specific signal: the subject's partial F-test beyond the control space, Bonferroni over layers, and the
   placebo test (the kind's excess partial R^2 beyond its placebo gradients', ``encoding.partition.placebo_test``)
   both p < alpha (an intersection-union test: p = the larger of the two; ``gradient_signal``);
2. organised as backprop predicts: fMRI, the best unique layer d*_u(v) = depth of argmax_k U_k(v) deepens with the
   distance from V1 (S_u > 0, one-sided layer-shuffle p < alpha); MEG, the unique signal's latencies fall with depth
   (T_u < 0, one-sided layer-shuffle p < alpha);
3. diverges from backprop: fMRI, the unique map is less hierarchical than the activations' (D_S,u = S_a - S_u > 0,
   one-sided bootstrap p over voxels < alpha); MEG, the unique signal runs in the forward order (T_u > 0, one-sided
   layer-shuffle p < alpha; D_T,u = T_u + T_a is its value beside the paper's D_T).
fMRI's unique-map metrics and claims 2 and 3 need its layers to be identifiable too (:func:`identifiable`); MEG's
read no such gate: the per-target diagnostic does not describe curves that pool every sensor (docs/power.md).
fMRI's unique maps are read only over the voxels whose own F-test survives BH-FDR (Bonferroni over layers first).
MEG's unique signal per sensor and time is too weak for a per-target test at THINGS-MEG's noise (docs/power.md), so,
once the subject's test holds, its curves average every sensor as the paper's r curves do, and they average the
in-sample excess partial R^2 E_k (``encoding.partition.excess_partial_r2``: 0 on average without signal), whose noise
is far below that of the difference of two cross-validated R^2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gradbrain import stats
from gradbrain.encoding.partition import combine_layers, placebo_test
from gradbrain.encoding.significance import best_layers
from gradbrain.features.kinds import ACTIVATIONS
from gradbrain.hierarchy import metrics as H
from gradbrain.hierarchy import nulls

CLAIMS = ("gradient_specific_signal", "organised_as_backprop", "diverges_from_backprop")
UNIQUE_METRICS = (
    "spatial_score_unique", "voxel_agreement_unique", "spatial_divergence_unique", "temporal_score_unique",
    "temporal_score_unique_window", "temporal_divergence_unique", "after_forward_fraction_unique",
)  # fmt: skip
"""The hierarchy metrics of the unique maps, group-tested over the subjects with gradient-specific signal."""


@dataclass
class Partition:
    """One kind's partition in a subject: control R^2 (t,), joint and single R^2 (L, t), per-target F-test p and excess
    partial R^2 (L, t), per-layer subject test (L,)."""

    control_r2: np.ndarray
    joint_r2: np.ndarray
    single_r2: np.ndarray
    f_p: np.ndarray
    excess_r2: np.ndarray
    layer_p: np.ndarray
    identifiability: float = float("nan")
    layer_excess: np.ndarray | None = None  # (L,): the subject's mean excess partial R^2 per layer
    placebo_excess: np.ndarray | None = None  # (J, L): the same for each placebo gradient

    def __post_init__(self) -> None:
        for name in ("control_r2", "joint_r2", "single_r2", "f_p", "excess_r2", "layer_p"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=float))
        if self.layer_excess is None:
            self.layer_excess = np.nanmean(self.excess_r2, axis=1)

    @property
    def unique(self) -> np.ndarray:
        """U_k = R^2(C + G_k) - R^2(C), (L, t)."""
        return self.joint_r2 - self.control_r2[None]

    @property
    def shared(self) -> np.ndarray:
        return self.control_r2[None] + self.single_r2 - self.joint_r2

    @property
    def unique_activations(self) -> np.ndarray:
        return self.joint_r2 - self.single_r2


@dataclass
class Signal:
    """The subject's test of gradient-specific signal: p (the larger of the two nulls'), the partial F-test's beyond
    the control space (Bonferroni over layers), the placebo test's t and p (NaN without placebos), and the note that
    says which null was beaten or why the claim is not made."""

    p: float
    p_control: float
    t_placebo: float
    p_placebo: float
    note: str


def signal(part: Partition, alpha: float) -> tuple[Signal, np.ndarray]:
    """The subject's test of gradient-specific signal and the targets significant for it (per target: Bonferroni
    over layers of the partial F-test, then BH-FDR over targets)."""
    p_control = float(combine_layers(part.layer_p[:, None])[0])
    has_placebos = part.placebo_excess is not None and np.size(part.placebo_excess)
    t, p_placebo = placebo_test(part.layer_excess, part.placebo_excess) if has_placebos else (np.nan, np.nan)
    p = max(p_control, p_placebo) if has_placebos else p_control
    if p_control >= alpha:
        note = f"not beyond the activations' control space (F-test p = {p_control:.3g})"
    elif not has_placebos:
        note = "beyond the activations' control space only (no placebo gradients: extraction.placebos)"
    elif not p_placebo < alpha:
        note = (
            f"not distinguishable from a forward-only brain that reads the activations nonlinearly: no better "
            f"predicted than by {len(part.placebo_excess)} placebo gradients (t = {t:.2f}, p = {p_placebo:.3g}); "
            "nor does this exclude a brain that learned by backprop in another network than this model"
        )
    else:
        note = f"beyond the activations' control space and {len(part.placebo_excess)} placebo gradients"
    sig = stats.fdr(combine_layers(part.f_p)) < alpha
    return Signal(float(p), p_control, float(t), float(p_placebo), note), sig


def one_sided(observed: float, null: np.ndarray, greater: bool) -> float:
    """(1 + #{null >= observed}) / (1 + n) for ``greater``, else with <=; NaN draws ignored."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or not len(null):
        return float("nan")
    hits = np.sum(null >= observed - 1e-12) if greater else np.sum(null <= observed + 1e-12)
    return float((1 + hits) / (1 + len(null)))


def identifiable(part: Partition, cfg: dict[str, Any]) -> str:
    """'' where fMRI's unique map's layers can be told apart at the observed signal (``unique_identifiability`` at
    least ``hierarchy.min_unique_identifiability``), else the note why the map gets no metric and no claim of
    organisation or divergence: a map whose best layer is a guess among collinear layers is flatter than the
    activations' whatever the brain, so its divergence would be found under backprop too (docs/power.md)."""
    need, value = float(cfg["min_unique_identifiability"]), float(part.identifiability)
    if np.isfinite(value) and value >= need:
        return ""
    return f"layers not identifiable (unique_identifiability {value:.2f} < {need:g})"


def _best_unique(part: Partition, depths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = np.nanargmax(np.nan_to_num(part.unique, nan=-np.inf), axis=0)
    return np.asarray(depths)[index], index


def fmri_unique(s: Any, kind: str, part: Partition, cfg: dict[str, Any], add, perms: np.ndarray) -> dict[str, float]:
    """Spatial metrics of the unique map of ``kind``; ``add(metric, value, note)`` records a row. Returns the values
    and one-sided p the claims read."""
    alpha, h = float(cfg["fdr_alpha"]), np.asarray(s.targets["distance_v1"], dtype=float)
    gate, sig = signal(part, alpha)
    depth_u, index_u = _best_unique(part, s.depths)
    act = best_layers(s.r[ACTIVATIONS], s.depths, s.n_train, alpha)
    s_a = H.spatial_score(act.best_depth[act.significant], h[act.significant])
    out = {"p_gate": gate.p, "signal": gate, "untested": identifiable(part, cfg)}
    if gate.p >= alpha or out["untested"]:
        note = f"no gradient-specific signal: {gate.note}" if gate.p >= alpha else out["untested"]
        for metric in ("spatial_score_unique", "voxel_agreement_unique", "spatial_divergence_unique"):
            add(metric, np.nan, note)
        return out
    s_u = H.spatial_score(depth_u[sig], h[sig])
    add(
        "spatial_score_unique", s_u, H.undefined(depth_u[sig], h[sig], "best unique layer", "voxels with unique signal")
    )
    null = nulls.spatial_null(index_u[sig], s.depths, h[sig], perms)
    out["organised_p"] = one_sided(s_u, null, greater=True)
    add("spatial_score_unique_p", out["organised_p"])
    both = act.significant & sig
    a_u = H.voxel_agreement(act.best_depth[both], depth_u[both])
    add("voxel_agreement_unique", a_u, H.undefined(depth_u[both], act.best_depth[both], "best unique layer", "voxels"))
    add("voxel_agreement_unique_p", one_sided(a_u, nulls.agreement_null(act.best_index[both], index_u[both],
                                                                         s.depths, perms), greater=True))  # fmt: skip
    d = H.spatial_divergence(s_a, s_u)
    add("spatial_divergence_unique", d, "a spatial score is undefined")
    draws = _divergence_draws(act.best_depth, act.significant, depth_u, sig, h, int(cfg["divergence_draws"]),
                              int(cfg["seed"]))  # fmt: skip
    out["divergent_p"] = one_sided(0.0, draws, greater=False) if np.isfinite(d) else float("nan")
    add("spatial_divergence_unique_p", out["divergent_p"])
    return out


def _divergence_draws(depth_a, sig_a, depth_u, sig_u, h, n_draws: int, seed: int) -> np.ndarray:
    """D_S,u over voxels resampled with replacement (each draw recomputes S_a and S_u on its voxels)."""
    rng = np.random.default_rng([seed, 7])
    n = len(h)
    out = np.empty(n_draws)
    for i in range(n_draws):
        idx = rng.integers(0, n, n)
        a, u = sig_a[idx], sig_u[idx]
        out[i] = H.spatial_score(depth_a[idx][a], h[idx][a]) - H.spatial_score(depth_u[idx][u], h[idx][u])
    return out


def unique_curves(part: Partition, n_channels: int, n_times: int) -> np.ndarray:
    """E_k(t): mean over sensors of the excess partial R^2 of layer k beyond the control space."""
    return H.meg_curves(part.excess_r2, n_channels, n_times)


def _latencies(curves: np.ndarray, times: np.ndarray, estimator: str, cfg: dict[str, Any]) -> np.ndarray:
    lat = (H.centroid_latencies(curves, times, float(cfg.get("centroid_fraction", 0.5))) if estimator == "centroid"
           else H.peak_latencies(curves, times, float(cfg["peak_fraction"])))  # fmt: skip
    return np.where(curves.max(1) > 0, lat, np.nan)


def meg_unique(s: Any, kind: str, part: Partition, cfg: dict[str, Any], add, perms: np.ndarray) -> dict[str, float]:
    """Temporal metrics of the unique signal of ``kind`` (centroid latency, and the paper's 95 % window).

    Not gated by ``unique_identifiability``: that diagnostic asks whether one target's best layer is recovered at a
    single target's unique r (fMRI's estimator), while these curves average every sensor; on the simulated
    ResNet it reads 0.13 where T_u recovers the planted backward order in nearly every subject (docs/power.md)."""
    alpha, times = float(cfg["fdr_alpha"]), np.asarray(s.targets["time"], dtype=float)
    gate, _ = signal(part, alpha)
    out = {"p_gate": gate.p, "signal": gate}
    if gate.p >= alpha:
        note = f"no gradient-specific signal: {gate.note}"
        for metric in ("temporal_score_unique", "temporal_score_unique_window", "temporal_divergence_unique",
                       "after_forward_fraction_unique"):  # fmt: skip
            add(metric, np.nan, note)
        return out
    curves = unique_curves(part, s.n_channels, s.n_times)
    act_curves = H.meg_curves(s.r[ACTIVATIONS], s.n_channels, s.n_times)
    for suffix, estimator in (("", "centroid"), ("_window", "peak")):
        lat = _latencies(curves, times, estimator, cfg)
        ok = np.isfinite(lat)
        t_u = H.temporal_score(s.depths[ok], lat[ok])
        why = H.undefined(lat[ok], s.depths[ok], "unique latency", "layers with unique signal")
        add(f"temporal_score_unique{suffix}", t_u, why)
        null = nulls.temporal_null(s.depths, lat, perms) if ok.all() else _shuffled(lat[ok], s.depths[ok], perms)
        backward, forward = one_sided(t_u, null, greater=False), one_sided(t_u, null, greater=True)
        add(f"temporal_score_unique{suffix}_p", min(1.0, 2 * min(backward, forward)))
        if estimator == "centroid":
            out["organised_p"], out["divergent_p"] = backward, forward
            t_a = H.temporal_score(s.depths, _latencies(act_curves, times, estimator, cfg))
            add("temporal_divergence_unique", H.temporal_divergence(t_u, t_a), why)
            act_lat = _latencies(act_curves, times, estimator, cfg)
            add("after_forward_fraction_unique", H.after_forward_fraction(lat[ok], act_lat) if ok.any() else np.nan,
                "no layer with unique signal")  # fmt: skip
    return out


def _shuffled(latencies: np.ndarray, depths: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """T under layer-label shuffles of the layers that have a latency (as many seeded draws as ``perms``)."""
    if len(latencies) < 3:
        return np.empty(0)
    rng = np.random.default_rng(len(latencies))
    shuffles = np.stack([rng.permutation(len(latencies)) for _ in range(len(perms))])
    return nulls.temporal_null(depths, latencies, shuffles)


def claims(modality: str, out: dict[str, Any], alpha: float) -> list[tuple[str, float, bool, str]]:
    """The three claims in order, each (claim, p, holds, note); a claim is made only where the one before holds. The
    first claim's note names the nulls it beat, or the one it did not (:class:`Signal`)."""
    gate = out.get("signal")
    rows = [("gradient_specific_signal", out["p_gate"], out["p_gate"] < alpha, gate.note if gate else "")]
    if out["p_gate"] >= alpha:
        return rows + [(c, np.nan, False, "no gradient-specific signal") for c in CLAIMS[1:]]
    if out.get("untested"):
        return rows + [(c, np.nan, False, out["untested"]) for c in CLAIMS[1:]]
    for claim, key in (("organised_as_backprop", "organised_p"), ("diverges_from_backprop", "divergent_p")):
        p = out.get(key, np.nan)
        rows.append((claim, p, bool(np.isfinite(p) and p < alpha), "" if np.isfinite(p) else "undefined"))
    return rows


def verdict(rows: list[tuple[str, float, bool, str]]) -> str:
    """One sentence per subject and kind from the claims (nothing about divergence without the signal); the claim of
    signal says against which nulls it holds, or which forward-only brain it does not exclude."""
    held = {claim for claim, _, holds, _ in rows if holds}
    first = rows[0][3] if rows and rows[0][3] else ""
    if "gradient_specific_signal" not in held:
        return f"no gradient-specific signal ({first})" if first else "no gradient-specific signal"
    organised, diverges = "organised_as_backprop" in held, "diverges_from_backprop" in held
    if organised and not diverges:
        sentence = "gradient-specific signal organised as backprop predicts"
    elif organised:
        sentence = "gradient-specific signal organised as backprop predicts, but less so than the activations"
    elif diverges:
        sentence = "gradient-specific signal that diverges from backprop"
    elif any(note.startswith("layers not identifiable") for _, _, _, note in rows):
        sentence = "gradient-specific signal, its layers not identifiable"
    else:
        sentence = "gradient-specific signal, organisation undecided"
    return f"{sentence} ({first})" if first else sentence
