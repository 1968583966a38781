"""The report stage's edge: read the hierarchy tables, draw every figure and table (docs/report.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from gradbrain.report.fmri import depth_vs_distance, score_by_depth, volume_maps
from gradbrain.report.meg import depth_vs_latency, meg_time_courses, meg_topomaps
from gradbrain.report.partition import variance_parts
from gradbrain.report.style import kind_colours
from gradbrain.report.surface import surface_maps
from gradbrain.report.tables import claims_table, summary, tests_table, verdicts_table

log = logging.getLogger(__name__)


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
        for name in (
            "scores",
            "tests",
            "verdicts",
            "profiles",
            "latencies",
            "best_layers",
            "topographies",
            "claims",
            "partition",
        )
    }
    scores, profiles, latencies, best, topo = (
        t[n] for n in ("scores", "profiles", "latencies", "best_layers", "topographies")
    )
    colours = kind_colours(set(scores.kind) | set(profiles.kind))
    written: list[Path] = []

    def path(stem: str, figure: str) -> Path:
        written.append(outdir / f"{stem}__{figure}.png")
        return written[-1]

    partition = t["partition"]
    for (dataset, model), part in partition.groupby(["dataset", "model"]) if len(partition) else ():
        variance_parts(part, f"{dataset} / {model}", path(f"{dataset}__{model}", "variance_parts"))
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
    claims_table(t["claims"], summary_dir / "claims.html")
    written += [summary_dir / f for f in ("summary.png", "tests.html", "verdicts.html", "claims.html")]
    log.info("wrote %d figures and tables to %s and %s", len(written), outdir, summary_dir)
    return written
