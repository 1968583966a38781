"""Rule simulate_study: the snakemake object in, one library call."""

from gradbrain.logs import setup
from gradbrain.simulate import simulate_study

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
simulate_study(sm.output[0], sm.wildcards.scenario, sm.params.simulation, sm.input[0])
