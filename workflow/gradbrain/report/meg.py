"""MEG figures: time courses per layer, depth against peak latency, sensor topomaps at each layer's T_k."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gradbrain.report.style import (
    DEPTH_CMAP,
    R_CMAP,
    R_SEQUENTIAL_CMAP,
    kind_colours,
    kinds_of,
    panels,
    save,
    subject_label,
)

log = logging.getLogger(__name__)


def meg_time_courses(profiles: pd.DataFrame, latencies: pd.DataFrame, title: str, out: Path) -> None:
    """R_k(t) (mean over sensors and subjects) per layer, coloured by depth, with T_k marked."""
    kinds = kinds_of(profiles)
    fig, axes = panels(len(kinds))
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
    save(fig, out)


def depth_vs_latency(
    latencies: pd.DataFrame, scores: pd.DataFrame, title: str, out: Path, colours: dict[str, str] | None = None
) -> None:
    """Peak latency T_k against layer depth, every kind, with the forward and backprop expectations drawn."""
    kinds = kinds_of(latencies)
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
    save(fig, out)


# ------------------------------------------------------------------------------------------------ brain maps


OLD_1020_NAMES = ("T3", "T4", "T5", "T6")
"""The standard 10-20 montage's old names of T7, T8, P7, P8 (same positions), left out of the EEG layout."""


@lru_cache(maxsize=2)
def _layout(system: str) -> tuple[dict[str, int], np.ndarray]:
    """Channel index and 2D centre (scaled to mne's default head sphere) of mne's CTF-275 layout (``ctf``) or of an
    EEG layout made from mne's colin27 10-20 montage (``eeg``)."""
    import mne

    if system == "ctf":
        layout = mne.channels.read_layout("CTF275")
    else:
        montage = mne.channels.make_standard_montage("colin27_1020")
        names = [n for n in montage.ch_names if n not in OLD_1020_NAMES]
        info = mne.create_info(names, 100.0, "eeg").set_montage(montage)
        layout = mne.channels.make_eeg_layout(info)
    centres = layout.pos[:, :2] + layout.pos[:, 2:] / 2
    centres = centres - (centres.min(0) + centres.max(0)) / 2
    centres *= 0.095 * 0.92 / np.linalg.norm(centres, axis=1).max()
    return {name: i for i, name in enumerate(layout.names)}, centres


LAYOUT_NAMES = {"ctf": "CTF-275 layout", "eeg": "10-20 montage"}


def _system(channels) -> str:
    """``ctf`` when any channel is a CTF sensor (THINGS-MEG), else ``eeg`` (THINGS-EEG2)."""
    return "ctf" if any(str(c).split("-")[0] in _layout("ctf")[0] for c in channels) else "eeg"


def sensor_positions(channels) -> tuple[list[str], np.ndarray]:
    """2D positions of the channels, centred and scaled to mne's default head sphere: CTF channels from mne's CTF-275
    layout, EEG channels (THINGS-EEG2's 10-10 names) from mne's colin27 10-20 montage when none is a CTF channel.

    THINGS-MEG names carry a suffix (``MLC11-1609``); the layout's do not. Channels not in the layout are dropped.
    """
    system = _system(channels)
    where, centres = _layout(system)
    pairs = [(c, str(c).split("-")[0]) for c in channels]
    kept = [(c, n) for c, n in pairs if n in where]
    if len(kept) < len(channels):
        log.warning(
            "%d channels are not in the %s and are left out of the topomaps",
            len(channels) - len(kept),
            LAYOUT_NAMES[system],
        )
    return [c for c, _ in kept], centres[[where[n] for _, n in kept]]


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

    kinds, subjects = kinds_of(topo), sorted(topo.subject.unique())
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
        who = "group mean" if subject is None else subject_label(subject)
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
        f"{title}: encoding r per sensor at each layer's peak time T_k\n({LAYOUT_NAMES[_system(topo.channel)]} seen "
        "from above, nose up; group: mean over subjects, each at its own T_k)",
        fontsize=10,
    )
    fig.savefig(out, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------- summary and tables
