"""The summary figure of every metric and the HTML tables of the group tests and the planted-truth verdicts."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gradbrain.report.style import (
    kind_colours,
    kinds_of,
    save,
)

SUMMARY_METRICS = {
    "spatial_score": "S = r(depth, distance)", "voxel_agreement": "A = r(depth_a, depth_k)",
    "spatial_divergence": "D_S = S_a - S_k", "temporal_score": "T = r(depth, T_k)",
    "temporal_divergence": "D_T = T_k + T_a", "after_forward_fraction": "share of layers (0-1)",
    "layer_identifiability": "identifiability (0-1)",
}  # fmt: skip


SUMMARY_COLUMNS = 3
"""Panels per row of the summary figure: about 1,000 px wide at the report's 110 dpi."""


def summary(scores: pd.DataFrame, out: Path, colours: dict[str, str] | None = None) -> None:
    """The main metrics per dataset and model: subjects as dots, the group mean as a bar, every kind side by side;
    ``SUMMARY_COLUMNS`` panels a row, so the figure stays readable at the report's width."""
    metrics = [m for m in SUMMARY_METRICS if m in set(scores.metric)]
    sel = scores[scores.metric.isin(metrics)]
    n_cols = min(SUMMARY_COLUMNS, max(len(metrics), 1))
    n_rows = -(-max(len(metrics), 1) // n_cols)
    groups = list(dict.fromkeys(zip(sel.dataset, sel.model, strict=True)))
    panel_h = 0.32 * max(len(groups), 1) + 1.0
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.6 * n_cols + 1.8, panel_h * n_rows + 0.8), sharey=True, squeeze=False
    )
    flat = axes.ravel()
    for ax in flat[len(metrics) :]:
        ax.axis("off")
    if sel.empty:
        flat[0].axis("on")
        flat[0].text(0.5, 0.5, "no metrics in scores.csv", ha="center")
        save(fig, out)
        return
    kinds = kinds_of(sel)
    colours = colours or kind_colours(kinds)
    offsets = np.linspace(-0.25, 0.25, len(kinds)) if len(kinds) > 1 else np.zeros(1)
    for ax, metric in zip(flat, metrics, strict=False):
        for y, (dataset, model) in enumerate(groups):
            m = sel[(sel.dataset == dataset) & (sel.model == model) & (sel.metric == metric)]
            for off, kind in zip(offsets, kinds, strict=True):
                v = m[m.kind == kind].value
                if v.empty:
                    continue
                first = ax is flat[0] and y == 0
                ax.scatter(
                    v, np.full(len(v), y + off), s=12, color=colours[kind], alpha=0.8, label=kind if first else None
                )
                ax.plot([v.mean()] * 2, [y + off - 0.1, y + off + 0.1], color=colours[kind], lw=2.5)
        ax.axvline(0, color="0.7", lw=0.6)
        ax.set_title(metric.replace("_", " "), fontsize=8)
        ax.set_xlabel(SUMMARY_METRICS[metric], fontsize=7)
        ax.tick_params(labelsize=7)
    for row in axes:
        row[0].set_yticks(range(len(groups)), [f"{d}\n{m}" for d, m in groups], fontsize=6)
    flat[0].invert_yaxis()  # first dataset on top
    fig.legend(*flat[0].get_legend_handles_labels(), loc="upper right", fontsize=7, frameon=False, ncol=len(kinds))
    fig.suptitle("Per-subject metrics (dots) and group means (bars)", fontsize=9, x=0.3)
    save(fig, out)


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
        f"BH-FDR over all {len(tests)} tests (bold: p_fdr < {alpha:g}). The scope column says which null a "
        "significant row beats; whole-gradient rows are no evidence of an error signal (a forward-only brain gives "
        "them too), gradient_signal and the *_unique rows are."
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


def claims_table(claims: pd.DataFrame, out: Path) -> None:
    """The claims of every subject and compared kind, in order (signal, organised, diverges), with the verdict."""
    caption = (
        "Claims per subject and kind, in order: is there gradient-specific signal (variance beyond every activation "
        "layer, partial F-test, and beyond the model's placebo gradients, the same network's gradients under rotated "
        "objectives)? If so, is it organised as backprop predicts? Does it diverge? A later claim is made only where "
        "the earlier holds (highlighted: holds); the note says which null a claim beat, or which forward-only brain "
        "it could not exclude."
    )
    out.write_text(html_table(claims, caption, claims.holds.astype(bool) if len(claims) else None))
