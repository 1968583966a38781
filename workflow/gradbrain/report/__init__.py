"""Figures and tables of the report, drawn from the hierarchy tables alone (no fits are recomputed).

Every figure shows each kind of feature present in the tables (activations, gradients, or any further kind) side
by side, with a colour per kind, the group result and the subjects. Palettes are colour-blind safe (Okabe-Ito for
kinds, viridis for depth, magma for r >= 0 and red-blue for signed r). What each table holds: docs/report.md.
"""

from __future__ import annotations

import html
import logging
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

log = logging.getLogger(__name__)
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
KIND_COLOURS = {
    "activations": OKABE_ITO[0],
    "gradients": OKABE_ITO[1],
    "feedback_alignment": OKABE_ITO[2],
    "sign_symmetry": OKABE_ITO[3],
    "direct_feedback_alignment": OKABE_ITO[4],
    "weight_gradient_sketch": OKABE_ITO[5],
}  # learning-rule kinds after the two of the paper
DEPTH_CMAP = "viridis"
R_CMAP = "RdBu_r"
R_SEQUENTIAL_CMAP = "magma"
FSAVERAGE5_VERTICES = 10242  # per hemisphere; fsaverage5's vertices are the first 10,242 of fsaverage's
SURFACE_VIEWS = (("left", "lateral"), ("left", "medial"), ("left", "ventral"),
                 ("right", "ventral"), ("right", "medial"), ("right", "lateral"))  # fmt: skip
SUMMARY_METRICS = {
    "spatial_score": "S = r(depth, distance)", "voxel_agreement": "A = r(depth_a, depth_k)",
    "spatial_divergence": "D_S = S_a - S_k", "temporal_score": "T = r(depth, T_k)",
    "temporal_divergence": "D_T = T_k + T_a", "after_forward_fraction": "share of layers (0-1)",
    "layer_identifiability": "identifiability (0-1)",
}  # fmt: skip


def kind_colours(kinds) -> dict[str, str]:
    """A colour per kind: the fixed ones for activations and gradients, the rest of Okabe-Ito in sorted order."""
    spare = [c for c in OKABE_ITO if c not in KIND_COLOURS.values()]
    extra = sorted(k for k in set(kinds) if k not in KIND_COLOURS)
    return {**KIND_COLOURS, **{k: spare[i % len(spare)] for i, k in enumerate(extra)}}


def _kinds(frame: pd.DataFrame) -> list[str]:
    kinds = list(dict.fromkeys(frame.kind))
    return sorted(kinds, key=lambda k: (k != "activations", k != "gradients", k))


def _panels(n: int, width: float = 4.2, height: float = 3.4):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False, sharey=True)
    return fig, axes[0]


def _subject_label(subject) -> str:
    return f"sub-{subject}"


def score_by_depth(profiles: pd.DataFrame, title: str, out: Path) -> None:
    """Mean encoding r of each ROI against layer depth; thin lines subjects, thick the group mean."""
    kinds = _kinds(profiles)
    fig, axes = _panels(len(kinds))
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
    _save(fig, out)


def meg_time_courses(profiles: pd.DataFrame, latencies: pd.DataFrame, title: str, out: Path) -> None:
    """R_k(t) (mean over sensors and subjects) per layer, coloured by depth, with T_k marked."""
    kinds = _kinds(profiles)
    fig, axes = _panels(len(kinds))
    cmap = plt.get_cmap(DEPTH_CMAP)
    profiles = profiles.assign(position=profiles.position.astype(float))  # seconds (the column also holds ROIs)
    for ax, kind in zip(axes, kinds, strict=True):
        sel = profiles[profiles.kind == kind]
        for depth, layer in sel.groupby("depth"):
            curve = layer.groupby("position").value.mean()
            ax.plot(curve.index * 1000, curve.values, color=cmap(depth), lw=1.2)
            tk = latencies[(latencies.kind == kind) & (latencies.depth == depth)].peak_latency.mean()
            ax.axvline(tk * 1000, color=cmap(depth), lw=0.6, ls=":")
        ax.set(title=kind, xlabel="time from image onset (ms)", ylabel="R_k(t): mean encoding r over sensors")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes[-1], label="relative layer depth")
    fig.suptitle(title + " (group mean; dotted: T_k, mean of times within 95 % of the peak)")
    _save(fig, out)


def depth_vs_distance(
    best: pd.DataFrame, scores: pd.DataFrame, title: str, out: Path, colours: dict[str, str] | None = None
) -> None:
    """Best-layer depth of significant voxels against distance from V1, with the spatial score per subject."""
    kinds = _kinds(best)
    colours = colours or kind_colours(kinds)
    fig, axes = _panels(len(kinds))
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
                label=_subject_label(subject),
            )
        s = scores[(scores.kind == kind) & (scores.metric == "spatial_score")]
        per = ", ".join(f"{_subject_label(r.subject)} {r.value:.2f}" for r in s.itertuples())
        ax.set(
            title=f"{kind}: S = {s.value.mean():.2f} ({per})",
            xlabel="distance from V1 centroid, same hemisphere (mm)",
            ylabel="best-layer relative depth",
        )
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, frameon=False, markerscale=2)
    fig.suptitle(title + " (significant voxels, BH-FDR 5 %; S: group mean and subjects)")
    _save(fig, out)


def depth_vs_latency(
    latencies: pd.DataFrame, scores: pd.DataFrame, title: str, out: Path, colours: dict[str, str] | None = None
) -> None:
    """Peak latency T_k against layer depth, every kind, with the forward and backprop expectations drawn."""
    kinds = _kinds(latencies)
    colours = colours or kind_colours(kinds)
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for kind in kinds:
        sel = latencies[latencies.kind == kind]
        for _, sub in sel.groupby("subject"):
            ax.plot(sub.depth, sub.peak_latency * 1000, color=colours[kind], lw=0.6, alpha=0.5)
        mean = sel.groupby("depth").peak_latency.mean()
        t = scores[(scores.kind == kind) & (scores.metric == "temporal_score")].value.mean()
        ax.plot(mean.index, mean.values * 1000, "o-", color=colours[kind], label=f"{kind} (T = {t:.2f})")
    act = latencies[latencies.kind == "activations"].groupby("depth").peak_latency.mean()
    if len(act):
        top = act.max() * 1000
        d = np.array([0.0, 1.0])
        ax.plot(d, act.min() * 1000 + d * (top - act.min() * 1000), "k--", lw=0.8, label="forward expectation")
        ax.plot(d, top + 50 + (1 - d) * 200, "k:", lw=0.8, label="backprop expectation (after forward, last first)")
    ax.set(
        xlabel="relative layer depth",
        ylabel="peak latency T_k (ms from image onset)",
        title=title + "\n(markers: group mean; thin lines: subjects)",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, frameon=False)
    _save(fig, out)


# ------------------------------------------------------------------------------------------------ brain maps
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


def volume_maps(best: pd.DataFrame, scores: pd.DataFrame, title: str, out: Path, max_slices: int = 6) -> None:
    """Axial slices in subject space of the best-layer depth of each significant voxel; a row per subject and kind.

    The horizontal axis is posterior -> anterior (y), the vertical one left -> right (x); grey voxels belong to the
    analysed ROIs but are not significant for that kind.
    """
    kinds, subjects = _kinds(best), sorted(best.subject.unique())
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
        label = f"{_subject_label(subject)}\n{kind}" + (f"\nS = {s.iloc[0]:.2f}" if len(s) else "")
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
    fig.suptitle(
        f"{title}: best-layer depth, axial slices in subject space\n(grey: analysed voxels not "
        "significant for that kind)",
        fontsize=10,
    )
    fig.savefig(out, dpi=110)
    plt.close(fig)


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
    kinds, subjects = _kinds(best), sorted(best.subject.unique())
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
        who = "group mean" if subject is None else _subject_label(subject)
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
@lru_cache(maxsize=1)
def _ctf_layout() -> tuple[dict[str, int], np.ndarray]:
    import mne

    layout = mne.channels.read_layout("CTF275")
    centres = layout.pos[:, :2] + layout.pos[:, 2:] / 2
    centres = centres - (centres.min(0) + centres.max(0)) / 2
    centres *= 0.095 * 0.92 / np.linalg.norm(centres, axis=1).max()
    return {name: i for i, name in enumerate(layout.names)}, centres


def sensor_positions(channels) -> tuple[list[str], np.ndarray]:
    """2D positions of CTF channels from mne's CTF-275 layout, centred and scaled to mne's default head sphere.

    THINGS-MEG names carry a suffix (``MLC11-1609``); the layout's do not. Channels not in the layout are dropped.
    """
    where, centres = _ctf_layout()
    kept = [c for c in channels if str(c).split("-")[0] in where]
    if len(kept) < len(channels):
        log.warning(
            "%d channels are not in the CTF-275 layout and are left out of the topomaps", len(channels) - len(kept)
        )
    return kept, centres[[where[str(c).split("-")[0]] for c in kept]]


def topomap_layers(depths, max_layers: int = 6) -> list[float]:
    """At most ``max_layers`` depths, evenly spread from the first to the last layer."""
    depths = np.unique(np.asarray(depths, float))
    if len(depths) <= max_layers:
        return list(depths)
    return list(depths[np.unique(np.linspace(0, len(depths) - 1, max_layers).round().astype(int))])


def _r_scale(values) -> tuple[str, tuple[float, float]]:
    """Colour map and limits for encoding r: sequential from 0 when r is (nearly) never negative, else diverging."""
    values = np.asarray(values, float)
    top = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    top = top if top > 0 else 1.0
    if np.nanmin(values) >= -0.05 * top:
        return R_SEQUENTIAL_CMAP, (0.0, top)
    return R_CMAP, (-top, top)


def meg_topomaps(topo: pd.DataFrame, title: str, out: Path, max_layers: int = 6) -> None:
    """Sensor maps of the encoding r at each layer's peak time T_k; per kind the group mean, then each subject."""
    import mne

    kinds, subjects = _kinds(topo), sorted(topo.subject.unique())
    layers = topomap_layers(topo.depth, max_layers)
    rows = [(kind, s) for kind in kinds for s in ([None] if len(subjects) > 1 else []) + subjects]
    fig, axes = plt.subplots(
        len(rows),
        len(layers),
        figsize=(1.9 * len(layers) + 1.6, 1.9 * len(rows) + 0.9),
        squeeze=False,
        layout="constrained",
    )
    for row, (kind, subject) in enumerate(rows):
        sel = topo[topo.kind == kind]
        cmap, vlim = _r_scale(sel.groupby(["depth", "channel"]).value.mean() if subject is None else sel.value)
        if subject is not None:
            sel = sel[sel.subject.astype(str) == str(subject)]
        for col, depth in enumerate(layers):
            ax = axes[row, col]
            at = sel[np.isclose(sel.depth, depth)]
            if at.empty:
                ax.axis("off")
                continue
            values = at.groupby("channel", sort=False).value.mean()
            names, pos = sensor_positions(values.index.to_list())
            im, _ = mne.viz.plot_topomap(
                values.loc[names].to_numpy(),
                pos,
                axes=ax,
                show=False,
                cmap=cmap,
                vlim=vlim,
                contours=0,
                sensors=True,
                extrapolate="local",
                res=32,
            )
            ax.set_title(f"depth {depth:.2f}\nT_k = {at.time.mean() * 1000:.0f} ms", fontsize=7)
        who = "group mean" if subject is None else _subject_label(subject)
        axes[row, 0].text(
            -0.25,
            0.5,
            f"{kind}\n{who}",
            transform=axes[row, 0].transAxes,
            rotation=90,
            va="center",
            ha="center",
            fontsize=8,
        )
        fig.colorbar(im, ax=axes[row].tolist(), label="encoding r", shrink=0.8, pad=0.02)
    fig.suptitle(
        f"{title}: encoding r per sensor at each layer's peak time T_k\n(CTF-275 layout seen from above, "
        "nose up; group: mean over subjects, each at its own T_k)",
        fontsize=10,
    )
    fig.savefig(out, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------- summary and tables
def summary(scores: pd.DataFrame, out: Path, colours: dict[str, str] | None = None) -> None:
    """The main metrics per dataset and model: subjects as dots, the group mean as a bar, every kind side by side."""
    metrics = [m for m in SUMMARY_METRICS if m in set(scores.metric)]
    sel = scores[scores.metric.isin(metrics)]
    fig, axes = plt.subplots(
        1,
        max(len(metrics), 1),
        figsize=(2.4 * max(len(metrics), 1) + 2.2, 0.5 * sel.groupby(["dataset", "model"]).ngroups + 1.8),
        sharey=True,
        squeeze=False,
    )
    axes = axes[0]
    if sel.empty:
        axes[0].text(0.5, 0.5, "no metrics in scores.csv", ha="center")
        _save(fig, out)
        return
    groups = list(dict.fromkeys(zip(sel.dataset, sel.model, strict=True)))
    kinds = _kinds(sel)
    colours = colours or kind_colours(kinds)
    offsets = np.linspace(-0.25, 0.25, len(kinds)) if len(kinds) > 1 else np.zeros(1)
    for ax, metric in zip(axes, metrics, strict=True):
        for y, (dataset, model) in enumerate(groups):
            m = sel[(sel.dataset == dataset) & (sel.model == model) & (sel.metric == metric)]
            for off, kind in zip(offsets, kinds, strict=True):
                v = m[m.kind == kind].value
                if v.empty:
                    continue
                ax.scatter(
                    v,
                    np.full(len(v), y + off),
                    s=12,
                    color=colours[kind],
                    alpha=0.8,
                    label=kind if ax is axes[0] and y == 0 else None,
                )
                ax.plot([v.mean()] * 2, [y + off - 0.1, y + off + 0.1], color=colours[kind], lw=2.5)
        ax.axvline(0, color="0.7", lw=0.6)
        ax.set_title(metric.replace("_", " "), fontsize=8)
        ax.set_xlabel(SUMMARY_METRICS[metric], fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(range(len(groups)), [f"{d} / {m}" for d, m in groups], fontsize=7)
    axes[0].invert_yaxis()  # first dataset on top
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper right", fontsize=7, frameon=False, ncol=len(kinds))
    fig.suptitle("Per-subject metrics (dots) and group means (bars)", fontsize=9, x=0.3)
    _save(fig, out)


TABLE_CSS = """body{font-family:sans-serif;font-size:13px;margin:12px;color:#111;background:#fff}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#eee}td.text{text-align:left}tr.significant td{font-weight:bold}
caption{caption-side:top;text-align:left;margin-bottom:6px}"""


def html_table(frame: pd.DataFrame, caption: str, highlight: pd.Series | None = None) -> str:
    """A self-contained HTML page holding one table (numbers to 3 significant digits, bold rows highlighted)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for n, row in enumerate(frame.itertuples(index=False)):
        cells = []
        for value in row:
            if isinstance(value, (float, np.floating)):
                cells.append(f"<td>{value:.3g}</td>")
            elif isinstance(value, (bool, np.bool_, int, np.integer)):
                cells.append(f"<td>{value}</td>")
            else:
                cells.append(f'<td class="text">{html.escape(str(value))}</td>')
        cls = ' class="significant"' if highlight is not None and bool(highlight.iloc[n]) else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(caption)}</title>'
        f"<style>{TABLE_CSS}</style></head><body><table><caption>{html.escape(caption)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></body></html>"
    )


def tests_table(tests: pd.DataFrame, out: Path, alpha: float = 0.05) -> None:
    """Every group test with its p and BH-FDR-corrected p; rows with p_fdr < alpha in bold."""
    caption = (
        f"Group tests: Wilcoxon signed-rank across subjects of each per-subject metric against 0, "
        f"BH-FDR over all {len(tests)} tests (bold: p_fdr < {alpha:g})."
    )
    out.write_text(html_table(tests, caption, tests.p_fdr < alpha if len(tests) else None))


def verdicts_table(verdicts: pd.DataFrame, out: Path) -> None:
    """Each planted expectation of a simulated study and whether the pipeline recovered it."""
    n_ok = int(verdicts.recovered.astype(bool).sum()) if len(verdicts) else 0
    caption = (
        f"Planted truth of the simulated studies: {n_ok} of {len(verdicts)} per-subject expectations "
        "recovered (bold: recovered)."
    )
    out.write_text(html_table(verdicts, caption, verdicts.recovered.astype(bool) if len(verdicts) else None))


def _save(fig, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def read_table(tables: Path, name: str) -> pd.DataFrame:
    """``tables/<name>.csv``, or an empty frame when the stage wrote it empty (e.g. no fMRI dataset)."""
    path = tables / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the hierarchy rule (snakemake --until hierarchy)")
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=["dataset", "model", "subject", "kind"])


def draw_figures(
    tables: str | Path, outdir: str | Path, summary_dir: str | Path | None = None, alpha: float = 0.05
) -> list[Path]:
    """Every figure and table of the report from the CSV tables in ``tables`` (results/hierarchy).

    Per (dataset, model) figures go to ``outdir`` as ``<dataset>__<model>__<figure>.png``; the summary figure
    and the HTML tables of the group tests and the planted-truth verdicts to ``summary_dir`` (default: outdir).
    """
    tables, outdir = Path(tables), Path(outdir)
    summary_dir = Path(summary_dir) if summary_dir is not None else outdir
    for d in (outdir, summary_dir):
        d.mkdir(parents=True, exist_ok=True)
    t = {
        name: read_table(tables, name)
        for name in ("scores", "tests", "verdicts", "profiles", "latencies", "best_layers", "topographies")
    }
    scores, profiles, latencies, best, topo = (
        t[n] for n in ("scores", "profiles", "latencies", "best_layers", "topographies")
    )
    colours = kind_colours(set(scores.kind) | set(profiles.kind))
    written: list[Path] = []

    def path(stem: str, figure: str) -> Path:
        written.append(outdir / f"{stem}__{figure}.png")
        return written[-1]

    for (dataset, model), prof in profiles.groupby(["dataset", "model"]):
        sc = scores[(scores.dataset == dataset) & (scores.model == model)]
        stem, name = f"{dataset}__{model}", f"{dataset} / {model}"
        if (prof.axis == "roi").any():
            b = best[(best.dataset == dataset) & (best.model == model)]
            score_by_depth(prof, f"{name}: encoding score by depth per ROI", path(stem, "score_by_depth"))
            depth_vs_distance(b, sc, name, path(stem, "depth_vs_distance"), colours)
            if len(b) and "space" in b and (b.space == "fsaverage").all():
                surface_maps(b, sc, name, path(stem, "brain_map"))
            elif len(b) and "k" in b:
                volume_maps(b, sc, name, path(stem, "brain_map"))
        else:
            lat = latencies[(latencies.dataset == dataset) & (latencies.model == model)]
            meg_time_courses(prof, lat, name, path(stem, "meg_time_courses"))
            depth_vs_latency(lat, sc, name, path(stem, "depth_vs_latency"), colours)
            tp = topo[(topo.dataset == dataset) & (topo.model == model)] if len(topo) else topo
            if len(tp):
                meg_topomaps(tp, name, path(stem, "meg_topomaps"))
    summary(scores, summary_dir / "summary.png", colours)
    tests_table(t["tests"], summary_dir / "tests.html", alpha)
    verdicts_table(t["verdicts"], summary_dir / "verdicts.html")
    written += [summary_dir / "summary.png", summary_dir / "tests.html", summary_dir / "verdicts.html"]
    log.info("wrote %d figures and tables to %s and %s", len(written), outdir, summary_dir)
    return written
