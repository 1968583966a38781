"""The variance parts of the joint fits: what a kind explains beyond the activations, what both share, what the
activations explain beyond it; by ROI (fMRI) or by latency (MEG), per kind and layer (``partition.csv``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gradbrain.report.style import OKABE_ITO

PARTS = {  # part: (label, colour)
    "unique_gradients": ("unique to the kind: R^2(C+G_k) - R^2(C)", OKABE_ITO[1]),
    "shared": ("shared: R^2(C) + R^2(G_k) - R^2(C+G_k)", OKABE_ITO[7]),
    "unique_activations": ("unique to the activations: R^2(C+G_k) - R^2(G_k)", OKABE_ITO[0]),
}


def shown_layers(depths, max_layers: int = 4) -> list[float]:
    """Up to ``max_layers`` depths spread over the sampled layers (first and last included)."""
    depths = sorted(set(depths))
    picks = np.unique(np.linspace(0, len(depths) - 1, min(max_layers, len(depths))).round().astype(int))
    return [depths[i] for i in picks]


def variance_parts(partition: pd.DataFrame, title: str, out: Path, max_layers: int = 4) -> None:
    """One row per kind, one column per shown layer: the three parts (mean over subjects) by ROI as stacked bars
    (fMRI), or by time as lines (MEG)."""
    kinds = list(dict.fromkeys(partition.kind))
    depths = shown_layers(partition.depth, max_layers)
    fig, axes = plt.subplots(len(kinds), len(depths), figsize=(3.1 * len(depths) + 0.6, 2.6 * len(kinds) + 1.1),
                             squeeze=False, sharey="row")  # fmt: skip
    meg = (partition.axis == "time").all()
    for row, kind in enumerate(kinds):
        for col, depth in enumerate(depths):
            ax = axes[row, col]
            sel = partition[(partition.kind == kind) & np.isclose(partition.depth, depth)]
            mean = sel.groupby(["position", "part"], sort=False).value.mean().unstack("part")
            if meg:
                mean.index = mean.index.astype(float) * 1000
                mean = mean.sort_index()
                for part, (label, colour) in PARTS.items():
                    if part in mean:
                        ax.plot(mean.index, mean[part], color=colour, lw=1.3, label=label)
                ax.set_xlabel("time from image onset (ms)", fontsize=7)
            else:
                bottom_pos, bottom_neg = np.zeros(len(mean)), np.zeros(len(mean))
                for part, (label, colour) in PARTS.items():
                    if part not in mean:
                        continue
                    values = mean[part].to_numpy()
                    base = np.where(values >= 0, bottom_pos, bottom_neg)
                    ax.bar(range(len(mean)), values, bottom=base, color=colour, label=label, width=0.8)
                    bottom_pos = bottom_pos + np.clip(values, 0, None)
                    bottom_neg = bottom_neg + np.clip(values, None, 0)
                ax.set_xticks(range(len(mean)), mean.index, rotation=60, fontsize=6)
            ax.axhline(0, color="0.6", lw=0.5)
            ax.set_title(f"{kind}, layer depth {depth:.2f}", fontsize=8)
            ax.tick_params(labelsize=6)
            if col == 0:
                ax.set_ylabel("cross-validated R^2 (mean over subjects)", fontsize=7)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(f"{title}: variance parts of the joint fit of each layer with every activation layer (C)", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(out, dpi=110)
    plt.close(fig)
