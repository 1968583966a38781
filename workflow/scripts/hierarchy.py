"""Stage hierarchy (workflow/rules/hierarchy.smk): rule hierarchy, the snakemake object in, one library call."""

from pathlib import Path

from gradbrain.hierarchy.stage import Fit, hierarchy_tables
from gradbrain.logs import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
fits = []
for enc, brain in zip(sm.input.encoding, sm.input.brain, strict=True):
    dataset, model, sub = Path(enc).parts[-3:]
    fits.append(Fit(dataset, model, sub.removeprefix("sub-").removesuffix(".zarr"), enc, brain))
hierarchy_tables(fits, sm.params.hierarchy, sm.params.scenarios, Path(sm.output.scores).parent)
