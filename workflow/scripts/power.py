"""Rule power: the snakemake object in, one library call."""

from gradbrain.logs import setup
from gradbrain.power import power_outputs

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
scores = sm.input.scores[0] if sm.input.scores else None
power_outputs(sm.input.cells, scores, list(sm.input.encoding), sm.params.power, sm.params.datasets, sm.output)
