"""fMRI figures: score by depth per ROI, best-layer depth against distance from V1, volume brain maps."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from gradbrain.report.style import (
    DEPTH_CMAP,
    kind_colours,
    kinds_of,
    panels,
    save,
    subject_label,
)


def score_by_depth(profiles: pd.DataFrame, title: str, out: Path) -> None:
    """Mean encoding r of each ROI against layer depth; thin lines subjects, thick the group mean."""
    kinds = kinds_of(profiles)
    fig, axes = panels(len(kinds))
    rois = list(dict.fromkeys(profiles.position))
    colours = plt.get_cmap(DEPTH_CMAP)(np.linspace(0, 0.9, len(rois)))
    for ax, kind in zip(axes, kinds, strict=True):
        sel = profiles[profiles.kind == kind]
        for roi, colour in zip(rois, colours, strict=False):
            r = sel[sel.position == roi]
            for _, sub in r.groupby("subject"):
                ax.plot(sub.depth, sub.value, color=colour, lw=0.6, alpha=0.5)
            mean = r.groupby("depth").value.mean()
            ax.plot(mean.index, mean.values, color=colour, lw=2, label=roi)
        ax.set(
            title=kind,
            xlabel="relative layer depth (0 = first, 1 = last layer)",
            ylabel="mean encoding r over the ROI's voxels",
        )
    axes[-1].legend(title="ROI", fontsize=7, frameon=False)
    fig.suptitle(title + " (thick: group mean; thin: subjects)")
    save(fig, out)


def depth_vs_distance(
    best: pd.DataFrame, scores: pd.DataFrame, title: str, out: Path, colours: dict[str, str] | None = None
) -> None:
    """Best-layer depth of significant voxels against distance from V1, with the spatial score per subject."""
    kinds = kinds_of(best)
    colours = colours or kind_colours(kinds)
    fig, axes = panels(len(kinds))
    rng = np.random.default_rng(0)
    markers = dict(zip(sorted(best.subject.unique()), "os^Dv<>p*h", strict=False))
    for ax, kind in zip(axes, kinds, strict=True):
        sel = best[(best.kind == kind) & best.significant.astype(bool)]
        for subject, sub in sel.groupby("subject"):
            jitter = rng.uniform(-0.015, 0.015, len(sub))
            ax.scatter(
                sub.distance_v1,
                sub.best_depth + jitter,
                s=5,
                alpha=0.35,
                color=colours[kind],
                marker=markers.get(subject, "o"),
                label=subject_label(subject),
            )
        s = scores[(scores.kind == kind) & (scores.metric == "spatial_score")]
        per = ", ".join(f"{subject_label(r.subject)} {r.value:.2f}" for r in s.itertuples())
        ax.set(
            title=f"{kind}: S = {s.value.mean():.2f} ({per})",
            xlabel="distance from V1 centroid, same hemisphere (mm)",
            ylabel="best-layer relative depth",
        )
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, frameon=False, markerscale=2)
    fig.suptitle(title + " (significant voxels, BH-FDR 5 %; S: group mean and subjects)")
    save(fig, out)


def _linear_axis(index: np.ndarray, mm: np.ndarray) -> tuple[float, float] | None:
    """(slope, intercept) with mm = slope * index + intercept when one grid axis maps onto one mm axis, else None."""
    if len(np.unique(index)) < 2:
        return None
    slope, intercept = np.polyfit(index, mm, 1)
    fits = np.allclose(slope * index + intercept, mm, atol=1e-3 * max(1.0, abs(slope)))
    return (float(slope), float(intercept)) if fits and slope != 0 else None


def _edges(first: int, last: int, axis: tuple[float, float] | None) -> list[float]:
    """Outer edges of grid cells first..last, in mm when ``axis`` = (slope, intercept) is known, else in voxels."""
    edges = [first - 0.5, last + 0.5]
    return edges if axis is None else [axis[0] * e + axis[1] for e in edges]


def volume_slices(voxels: pd.DataFrame, max_slices: int = 6) -> list[int]:
    """The axial slices (grid index k) to draw: those holding the most voxels, at most ``max_slices``, in order."""
    counts = voxels.groupby("k").size().sort_values(ascending=False, kind="stable")
    return sorted(int(k) for k in counts.index[:max_slices])


def slice_image(voxels: pd.DataFrame, k: int, value: str = "best_depth") -> tuple[np.ndarray, np.ndarray, list]:
    """One axial slice as arrays over the subject's (j, i) bounding box: ``value`` where significant, and presence.

    Rows run along j (y), columns along i (x), both in grid order. Returns (values with NaN where not significant,
    presence mask of the ROI voxels, extent [i0, i1, j0, j1] in grid units).
    """
    i0, i1, j0, j1 = voxels.i.min(), voxels.i.max(), voxels.j.min(), voxels.j.max()
    shape = (j1 - j0 + 1, i1 - i0 + 1)
    values, present = np.full(shape, np.nan), np.zeros(shape, bool)
    sl = voxels[voxels.k == k]
    present[sl.j - j0, sl.i - i0] = True
    sig = sl[sl.significant.astype(bool)]
    values[sig.j - j0, sig.i - i0] = sig[value]
    return values, present, [i0, i1, j0, j1]


NOT_SIGNIFICANT = Patch(facecolor="0.85", edgecolor="0.6", label="analysed voxel, not significant for that kind")
"""The legend entry of the grey voxels of the brain maps."""


def volume_maps(best: pd.DataFrame, scores: pd.DataFrame, title: str, out: Path, max_slices: int = 6) -> None:
    """Axial slices in subject space of the best-layer depth of each significant voxel; a row per subject and kind.

    The horizontal axis is posterior -> anterior (y), the vertical one left -> right (x); grey voxels belong to the
    analysed ROIs but are not significant for that kind.
    """
    kinds, subjects = kinds_of(best), sorted(best.subject.unique())
    slices = {s: volume_slices(best[(best.subject == s) & (best.kind == kinds[0])], max_slices) for s in subjects}
    n_cols = max(len(v) for v in slices.values())
    first = best[(best.subject == subjects[0]) & (best.kind == kinds[0])]
    aspect = (first.i.max() - first.i.min() + 1) / (first.j.max() - first.j.min() + 1)
    panel_h = float(np.clip(2.4 * aspect, 0.9, 3.2))
    rows = [(s, kind) for s in subjects for kind in kinds]
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(2.4 * n_cols + 1.8, panel_h * len(rows) + 1.0), squeeze=False, layout="constrained"
    )
    cmap, grey = plt.get_cmap(DEPTH_CMAP), ListedColormap(["0.85"])
    for row, (subject, kind) in enumerate(rows):
        vox = best[(best.subject == subject) & (best.kind == kind)]
        ax_i, ax_j, ax_k = (
            _linear_axis(vox[c].to_numpy(), vox[m].to_numpy()) for c, m in (("i", "x_mm"), ("j", "y_mm"), ("k", "z_mm"))
        )
        s = scores[
            (scores.subject.astype(str) == str(subject)) & (scores.kind == kind) & (scores.metric == "spatial_score")
        ].value
        label = f"{subject_label(subject)}\n{kind}" + (f"\nS = {s.iloc[0]:.2f}" if len(s) else "")
        for col in range(n_cols):
            ax = axes[row, col]
            if col >= len(slices[subject]):
                ax.axis("off")
                continue
            k = slices[subject][col]
            values, present, (i0, i1, j0, j1) = slice_image(vox, k)
            # transpose: y (j) horizontal, x (i) vertical; extents in mm where the grid is axis-aligned
            xs, ys = _edges(i0, i1, ax_i), _edges(j0, j1, ax_j)
            extent = [ys[0], ys[1], xs[0], xs[1]]
            ax.imshow(
                np.where(present, 1.0, np.nan).T, cmap=grey, origin="lower", extent=extent, interpolation="nearest"
            )
            im = ax.imshow(values.T, cmap=cmap, vmin=0, vmax=1, origin="lower", extent=extent, interpolation="nearest")
            if ys[0] > ys[1]:
                ax.invert_xaxis()
            if xs[0] > xs[1]:
                ax.invert_yaxis()
            if row == 0 or rows[row - 1][0] != subject:
                z = f"z = {ax_k[0] * k + ax_k[1]:.1f} mm" if ax_k else f"slice k = {k}"
                ax.set_title(z, fontsize=8)
            ax.tick_params(labelsize=6)
            if row == len(rows) - 1 or rows[row + 1][0] != subject:
                ax.set_xlabel("y, posterior → anterior (mm)" if ax_j else "j (voxel)", fontsize=7)
            if col == 0:
                ax.set_ylabel("x, left → right (mm)" if ax_i else "i (voxel)", fontsize=6)
                ax.text(-0.32, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=7)
    fig.colorbar(im, ax=axes, label="best-layer relative depth", shrink=min(0.6, 3.0 / len(rows)), aspect=15)
    fig.legend(handles=[NOT_SIGNIFICANT], loc="lower right", fontsize=7, frameon=False)
    fig.suptitle(f"{title}: best-layer depth, axial slices in subject space", fontsize=10)
    fig.savefig(out, dpi=110)
    plt.close(fig)
