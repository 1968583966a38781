"""Rule power_cell: the snakemake object in, one library call."""

from gradbrain.logs import setup
from gradbrain.power import write_cell

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
write_cell(sm.params.cell, dict(sm.input.items()), sm.params.config, sm.output[0])
