"""Rule hierarchy: the snakemake object in, one library call."""

from pathlib import Path

from gradbrain.logs import setup
from gradbrain.scores import Fit, hierarchy_tables

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
fits = []
for enc, brain in zip(sm.input.encoding, sm.input.brain):
    dataset, model, sub = Path(enc).parts[-3:]
    fits.append(Fit(dataset, model, sub.removeprefix("sub-").removesuffix(".zarr"), enc, brain))
hierarchy_tables(fits, sm.params.hierarchy, sm.params.scenarios, Path(sm.output.scores).parent)
