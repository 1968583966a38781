"""The power curves and the real data's operating points on them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradbrain import store


def operating_points(
    scores_csv: str | Path | None, encoding_files: Iterable[str | Path], datasets: dict[str, dict[str, Any]]
) -> pd.DataFrame:
    """The real datasets' observed activation r (MEG peak r, fMRI median best r over subjects), image count
    (median training images of their encoding stores) and subject count."""
    cols = ["dataset", "modality", "observed_r", "n_images", "n_subjects"]
    real = {name: ds for name, ds in datasets.items() if not ds.get("simulated")}
    if not real or not scores_csv or not Path(scores_csv).exists():
        return pd.DataFrame(columns=cols)
    table = pd.read_csv(scores_csv)
    n_train: dict[str, list[int]] = {}
    for path in encoding_files:
        n_train.setdefault(Path(path).parts[-3], []).append(int(store.open_group(path).attrs["n_train"]))
    out = []
    for name, ds in real.items():
        modality = "eeg" if ds.get("format") == "things_eeg2" else ds["modality"]  # the power grid's eeg cells
        metric = "best_r_median" if modality == "fmri" else "peak_r"
        sel = table[(table.dataset == name) & (table.kind == "activations") & (table.metric == metric)]
        if sel.empty:
            continue
        counts = n_train.get(name, [])
        out.append(
            {
                "dataset": name,
                "modality": modality,
                "observed_r": float(sel.value.median()),
                "n_images": int(np.median(counts)) if counts else math.nan,
                "n_subjects": len(ds.get("subjects", [])),
            }
        )
    return pd.DataFrame(out, columns=cols)


FIGURE_TESTS = {  # (modality: kind, metric, claim, test) drawn on the curves; group tests at the largest group
    "meg": [
        ("activations", "temporal_score", "> 0", "permutation"),
        ("gradients", "temporal_score", "< 0", "permutation"),
        ("gradients", "temporal_score_centroid", "< 0", "permutation"),
        ("gradients", "temporal_score_own_centroid", "< 0", "permutation"),
        ("gradients", "temporal_divergence", "> 0", "permutation"),
        ("gradients", "temporal_score_centroid", "< 0", "wilcoxon"),
    ],
    "fmri": [
        ("activations", "spatial_score", "> 0", "permutation"),
        ("gradients", "spatial_score", "> 0", "permutation"),
        ("gradients", "voxel_agreement", "> 0", "permutation"),
        ("gradients", "spatial_divergence", "> 0", "permutation"),
        ("gradients", "spatial_score_own", "> 0", "permutation"),
        ("gradients", "spatial_score", "> 0", "wilcoxon"),
    ],
}
FIGURE_TESTS["eeg"] = FIGURE_TESTS["meg"]  # THINGS-EEG2's design, scored as MEG


def power_figure(table: pd.DataFrame, points: pd.DataFrame, out: str | Path) -> Path:
    """Power curves: per model and modality (rows) and scenario (columns), the rate of each headline permutation
    test, and of the group test at the largest group size, against the observed activation r, one line per image
    count; dashed where the claim is planted false; the real data's observed r marked by a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    largest = table.loc[table.test == "wilcoxon", "n_subjects"].max() if (table.test == "wilcoxon").any() else 0
    table = table[(table.test == "permutation") | ((table.test == "wilcoxon") & (table.n_subjects == largest))]
    panels = [(m, mod) for m in table.model.unique() for mod in table.modality.unique()]
    scenarios = list(table.scenario.unique())
    fig, axes = plt.subplots(
        max(len(panels), 1),
        max(len(scenarios), 1),
        squeeze=False,
        figsize=(4 * max(len(scenarios), 1), 3 * max(len(panels), 1)),
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (model, modality) in enumerate(panels):
        for j, scenario in enumerate(scenarios):
            ax = axes[i][j]
            sel = table[(table.model == model) & (table.modality == modality) & (table.scenario == scenario)]
            for c, (kind, metric, claim, test) in enumerate(FIGURE_TESTS.get(modality, [])):
                rows = sel[(sel.kind == kind) & (sel.metric == metric) & (sel.claim == claim) & (sel.test == test)]
                group = f", group of {largest}" if test == "wilcoxon" else ""
                for n_images, line in rows.groupby("n_images"):
                    line = line.sort_values("observed_r")
                    style = "--" if (line.planted == "no_effect").any() else "-"
                    ax.plot(
                        line.observed_r,
                        line.rate,
                        style,
                        marker="o",
                        ms=3,
                        color=colours[c % len(colours)],
                        alpha=0.4 + 0.6 * (n_images / sel.n_images.max()),
                        lw=2.5 if test == "wilcoxon" else 1.5,
                        label=f"{kind[0]} {metric} {claim}{group}" if n_images == sel.n_images.max() else None,
                    )
            for point in points[points.modality == modality].itertuples():
                ax.axvline(point.observed_r, color="k", lw=0.8)
                ax.text(
                    point.observed_r,
                    1.02,
                    f"{point.dataset}: {point.n_images} img, {point.n_subjects} sub",
                    fontsize=6,
                    rotation=90,
                    va="bottom",
                )
            ax.axhline(0.8, color="grey", lw=0.5, ls=":")
            ax.axhline(0.05, color="grey", lw=0.5, ls=":")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlim(left=0)
            ax.set_title(f"{model} {modality} {scenario}", fontsize=8)
            ax.set_xlabel("observed r (activations)", fontsize=7)
            ax.set_ylabel("rate p < alpha", fontsize=7)
            if j == 0:
                ax.legend(fontsize=5, loc="best")
    fig.suptitle(
        "per-subject permutation tests and (thick) the group test at the largest group\none line per image "
        "count (lighter: fewer images), points: noise levels\ndashed: claim planted false (false-positive "
        "rate)",
        fontsize=8,
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
