"""fsaverage5 surface maps of the best-layer depth (nilearn's bundled mesh)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gradbrain.report.style import (
    DEPTH_CMAP,
    FSAVERAGE5_VERTICES,
    kinds_of,
    subject_label,
)

SURFACE_VIEWS = (("left", "lateral"), ("left", "medial"), ("left", "ventral"),
                 ("right", "ventral"), ("right", "medial"), ("right", "lateral"))  # fmt: skip


def surface_values(best: pd.DataFrame, kind: str, subject=None) -> dict[str, np.ndarray]:
    """Best-layer depth on the fsaverage5 mesh per hemisphere ('left', 'right'): NaN where nothing is significant.

    fsaverage vertex v < 10,242 is fsaverage5 vertex v; vertices beyond are left out. ``subject=None`` gives the
    group map: the mean over subjects of the depth where the vertex is significant.
    """
    sel = best[(best.kind == kind) & best.significant.astype(bool) & (best.i < FSAVERAGE5_VERTICES)]
    if subject is not None:
        sel = sel[sel.subject.astype(str) == str(subject)]
    out = {}
    for hemi, name in (("lh", "left"), ("rh", "right")):
        h = sel[sel.hemi == hemi].groupby("i").best_depth.mean()
        values = np.full(FSAVERAGE5_VERTICES, np.nan)
        values[h.index.to_numpy(int)] = h.to_numpy()
        out[name] = values
    return out


def surface_maps(best: pd.DataFrame, scores: pd.DataFrame, title: str, out: Path, views=SURFACE_VIEWS) -> None:
    """Best-layer depth on nilearn's inflated fsaverage5 mesh: per kind the group map, then each subject."""
    from nilearn import datasets, plotting

    mesh = datasets.load_fsaverage("fsaverage5")["inflated"]
    sulc = datasets.load_fsaverage_data(mesh="fsaverage5", data_type="sulcal", mesh_type="inflated").data
    kinds, subjects = kinds_of(best), sorted(best.subject.unique())
    rows = [(kind, s) for kind in kinds for s in ([None] if len(subjects) > 1 else []) + subjects]
    fig, axes = plt.subplots(
        len(rows),
        len(views),
        figsize=(2.3 * len(views) + 1.5, 2.0 * len(rows) + 0.8),
        subplot_kw={"projection": "3d"},
        squeeze=False,
        layout="constrained",
    )
    for row, (kind, subject) in enumerate(rows):
        values = surface_values(best, kind, subject)
        who = "group mean" if subject is None else subject_label(subject)
        for col, (hemi, view) in enumerate(views):
            ax = axes[row, col]
            plotting.plot_surf(
                mesh.parts[hemi],
                surf_map=values[hemi],
                bg_map=sulc.parts[hemi],
                hemi=hemi,
                view=view,
                cmap=DEPTH_CMAP,
                vmin=0,
                vmax=1,
                axes=ax,
                figure=fig,
                colorbar=False,
                engine="matplotlib",
            )
            if row == 0:
                ax.set_title(f"{hemi} {view}", fontsize=8)
        axes[row, 0].text2D(
            0.0,
            0.5,
            f"{kind}\n{who}",
            transform=axes[row, 0].transAxes,
            rotation=90,
            va="center",
            ha="center",
            fontsize=8,
        )
    sm = plt.cm.ScalarMappable(cmap=DEPTH_CMAP, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes, label="best-layer relative depth (significant vertices)", shrink=0.5)
    fig.suptitle(
        f"{title}: best-layer depth on the inflated fsaverage5 mesh\n(fsaverage vertices < 10,242; "
        "group: mean over subjects where significant)",
        fontsize=10,
    )
    fig.savefig(out, dpi=100)
    plt.close(fig)


# -------------------------------------------------------------------------------------------------- topomaps
