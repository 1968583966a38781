"""The report's shared style: colour-blind safe palettes (Okabe-Ito for kinds, viridis for depth, magma for r >= 0,
red-blue for signed r), panel layout and saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

matplotlib.use("Agg")

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


def kind_colours(kinds) -> dict[str, str]:
    """A colour per kind: the fixed ones for activations and gradients, the rest of Okabe-Ito in sorted order."""
    spare = [c for c in OKABE_ITO if c not in KIND_COLOURS.values()]
    extra = sorted(k for k in set(kinds) if k not in KIND_COLOURS)
    return {**KIND_COLOURS, **{k: spare[i % len(spare)] for i, k in enumerate(extra)}}


def kinds_of(frame: pd.DataFrame) -> list[str]:
    kinds = list(dict.fromkeys(frame.kind))
    return sorted(kinds, key=lambda k: (k != "activations", k != "gradients", k))


def panels(n: int, width: float = 4.2, height: float = 3.4):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False, sharey=True)
    return fig, axes[0]


def subject_label(subject) -> str:
    return f"sub-{subject}"


def save(fig, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
