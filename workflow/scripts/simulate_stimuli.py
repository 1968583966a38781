"""Rule simulate_stimuli: the snakemake object in, one library call."""

from gradbrain.logs import setup
from gradbrain.models import load_model
from gradbrain.simulate import make_stimuli

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
models = [load_model(sm.params.specs[m], weights_path=w) for m, w in zip(sm.params.simulation["driver_models"], sm.input.weights)]
make_stimuli(sm.output[0], sm.params.simulation, models)
