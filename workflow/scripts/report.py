"""Stage report (workflow/rules/report.smk): rule report, the snakemake object in, one library call."""

from pathlib import Path

from gradbrain.logs import setup
from gradbrain.report.stage import draw_figures

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
draw_figures(Path(sm.input.scores).parent, sm.output.figures, sm.output.summary, alpha=sm.params.alpha)
