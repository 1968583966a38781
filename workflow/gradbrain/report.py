"""Figures drawn from the hierarchy tables alone (no fits are recomputed), activations beside gradients."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

log = logging.getLogger(__name__)
KIND_COLOURS = {"activations": "#0072B2", "gradients": "#D55E00"}  # Okabe-Ito, colour-blind safe
KIND_COLOURS |= {"feedback_alignment": "#009E73", "sign_symmetry": "#CC79A7", "direct_feedback_alignment": "#E69F00",
                 "weight_gradient_sketch": "#56B4E9"}  # learning-rule kinds; any other kind: tab10 in summary
DEPTH_CMAP = "viridis"


def _kinds(frame: pd.DataFrame) -> list[str]:
    kinds = list(dict.fromkeys(frame.kind))
    return sorted(kinds, key=lambda k: (k != "activations", k))


def _panels(n: int, width: float = 4.2, height: float = 3.4):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False, sharey=True)
    return fig, axes[0]


def score_by_depth(profiles: pd.DataFrame, title: str, out: Path) -> None:
    """Mean encoding r of each ROI against layer depth; thin lines subjects, thick the group mean."""
    kinds = _kinds(profiles)
    fig, axes = _panels(len(kinds))
    rois = list(dict.fromkeys(profiles.position))
    colours = plt.get_cmap(DEPTH_CMAP)(np.linspace(0, 0.9, len(rois)))
    for ax, kind in zip(axes, kinds):
        sel = profiles[profiles.kind == kind]
        for roi, colour in zip(rois, colours):
            r = sel[sel.position == roi]
            for _, sub in r.groupby("subject"):
                ax.plot(sub.depth, sub.value, color=colour, lw=0.6, alpha=0.5)
            mean = r.groupby("depth").value.mean()
            ax.plot(mean.index, mean.values, color=colour, lw=2, label=roi)
        ax.set(title=kind, xlabel="relative layer depth", ylabel="encoding r (Pearson, 5-fold CV)")
    axes[-1].legend(title="ROI", fontsize=7, frameon=False)
    fig.suptitle(title)
    _save(fig, out)


def meg_time_courses(profiles: pd.DataFrame, latencies: pd.DataFrame, title: str, out: Path) -> None:
    """R_k(t) (mean over sensors and subjects) per layer, coloured by depth, with T_k marked."""
    kinds = _kinds(profiles)
    fig, axes = _panels(len(kinds))
    cmap = plt.get_cmap(DEPTH_CMAP)
    profiles = profiles.assign(position=profiles.position.astype(float))  # seconds (the column also holds ROIs)
    for ax, kind in zip(axes, kinds):
        sel = profiles[profiles.kind == kind]
        for depth, layer in sel.groupby("depth"):
            curve = layer.groupby("position").value.mean()
            ax.plot(curve.index * 1000, curve.values, color=cmap(depth), lw=1.2)
            tk = latencies[(latencies.kind == kind) & (latencies.depth == depth)].peak_latency.mean()
            ax.axvline(tk * 1000, color=cmap(depth), lw=0.6, ls=":")
        ax.set(title=kind, xlabel="time from image onset (ms)", ylabel="mean r over sensors")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes[-1], label="relative layer depth")
    fig.suptitle(title + " (dotted: T_k, mean of times within 95 % of the peak)")
    _save(fig, out)


def depth_vs_distance(best: pd.DataFrame, scores: pd.DataFrame, title: str, out: Path) -> None:
    """Best-layer depth of significant voxels against distance from V1, with the spatial score per subject."""
    kinds = _kinds(best)
    fig, axes = _panels(len(kinds))
    rng = np.random.default_rng(0)
    for ax, kind in zip(axes, kinds):
        sel = best[(best.kind == kind) & best.significant.astype(bool)]
        jitter = rng.uniform(-0.015, 0.015, len(sel))
        ax.scatter(sel.distance_v1, sel.best_depth + jitter, s=4, alpha=0.35, color=KIND_COLOURS.get(kind, "0.3"))
        s = scores[(scores.kind == kind) & (scores.metric == "spatial_score")].value
        ax.set(title=f"{kind}: S = {s.mean():.2f} (subjects {', '.join(f'{v:.2f}' for v in s)})",
               xlabel="distance from V1 centroid, same hemisphere (mm)", ylabel="best-layer relative depth")
    fig.suptitle(title + " (significant voxels, BH-FDR 5 %)")
    _save(fig, out)


def depth_vs_latency(latencies: pd.DataFrame, scores: pd.DataFrame, title: str, out: Path) -> None:
    """Peak latency T_k against layer depth, both kinds, with the forward and backprop expectations drawn."""
    fig, ax = plt.subplots(figsize=(5.2, 4))
    for kind in _kinds(latencies):
        sel = latencies[latencies.kind == kind]
        for _, sub in sel.groupby("subject"):
            ax.plot(sub.depth, sub.peak_latency * 1000, color=KIND_COLOURS.get(kind, "0.3"), lw=0.6, alpha=0.5)
        mean = sel.groupby("depth").peak_latency.mean()
        t = scores[(scores.kind == kind) & (scores.metric == "temporal_score")].value.mean()
        ax.plot(mean.index, mean.values * 1000, "o-", color=KIND_COLOURS.get(kind, "0.3"), label=f"{kind} (T = {t:.2f})")
    act = latencies[latencies.kind == "activations"].groupby("depth").peak_latency.mean()
    if len(act):
        top = act.max() * 1000
        d = np.array([0.0, 1.0])
        ax.plot(d, act.min() * 1000 + d * (top - act.min() * 1000), "k--", lw=0.8, label="forward expectation")
        ax.plot(d, top + 50 + (1 - d) * 200, "k:", lw=0.8, label="backprop expectation (after forward, last first)")
    ax.set(xlabel="relative layer depth", ylabel="peak latency T_k (ms)", title=title)
    ax.legend(fontsize=7, frameon=False)
    _save(fig, out)


def summary(scores: pd.DataFrame, out: Path) -> None:
    """The main metrics per dataset and model, subjects as dots, activations beside gradients."""
    metrics = ["spatial_score", "voxel_agreement", "spatial_divergence", "temporal_score", "temporal_divergence",
               "after_forward_fraction", "layer_identifiability"]
    sel = scores[scores.metric.isin(metrics)]
    if sel.empty:
        return
    groups = list(dict.fromkeys(zip(sel.dataset, sel.model)))
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics), 0.45 * len(groups) + 1.6), sharey=True)
    for ax, metric in zip(axes, metrics):
        for y, (dataset, model) in enumerate(groups):
            m = sel[(sel.dataset == dataset) & (sel.model == model) & (sel.metric == metric)]
            kinds = _kinds(sel)
            for i, kind in enumerate(kinds):
                v, off = m[m.kind == kind].value, (i - (len(kinds) - 1) / 2) * 0.3 / max(len(kinds) - 1, 1)
                colour = KIND_COLOURS.get(kind, plt.get_cmap("tab10")(i % 10))
                ax.scatter(v, np.full(len(v), y + off), s=14, color=colour, label=kind if y == 0 else None)
        ax.axvline(0, color="0.7", lw=0.6)
        ax.set_title(metric.replace("_", " "), fontsize=8)
    axes[0].set_yticks(range(len(groups)), [f"{d} / {m}" for d, m in groups], fontsize=7)
    axes[-1].legend(fontsize=7, frameon=False)
    _save(fig, out, tight=False)


def _save(fig, out: Path, tight: bool = True) -> None:
    if tight:
        fig.tight_layout()
    else:
        fig.subplots_adjust(left=0.14, right=0.99, wspace=0.15, bottom=0.2)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def draw_figures(tables: str | Path, outdir: str | Path) -> list[Path]:
    """Every figure of the report from the CSV tables in ``tables``."""
    tables, outdir = Path(tables), Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    read = {name: pd.read_csv(tables / f"{name}.csv") for name in ("scores", "profiles", "latencies")}
    best_path = tables / "best_layers.csv"
    best = pd.read_csv(best_path) if best_path.stat().st_size > 1 else pd.DataFrame(columns=["dataset", "model"])
    scores, profiles, latencies = read["scores"], read["profiles"], read["latencies"]
    written = []
    for (dataset, model), prof in profiles.groupby(["dataset", "model"]):
        sc = scores[(scores.dataset == dataset) & (scores.model == model)]
        stem = f"{dataset}__{model}"
        if (prof.axis == "roi").any():
            score_by_depth(prof, f"{dataset} / {model}: encoding score by depth per ROI", outdir / f"{stem}__score_by_depth.png")
            b = best[(best.dataset == dataset) & (best.model == model)]
            depth_vs_distance(b, sc, f"{dataset} / {model}", outdir / f"{stem}__depth_vs_distance.png")
            written += [outdir / f"{stem}__score_by_depth.png", outdir / f"{stem}__depth_vs_distance.png"]
        else:
            lat = latencies[(latencies.dataset == dataset) & (latencies.model == model)]
            meg_time_courses(prof, lat, f"{dataset} / {model}", outdir / f"{stem}__meg_time_courses.png")
            depth_vs_latency(lat, sc, f"{dataset} / {model}", outdir / f"{stem}__depth_vs_latency.png")
            written += [outdir / f"{stem}__meg_time_courses.png", outdir / f"{stem}__depth_vs_latency.png"]
    summary(scores, outdir / "summary.png")
    written.append(outdir / "summary.png")
    log.info("wrote %d figures to %s", len(written), outdir)
    return written
