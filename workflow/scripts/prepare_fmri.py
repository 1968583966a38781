"""Rule prepare_fmri: the snakemake object in, one library call."""

from gradbrain.logs import setup
from gradbrain.prepare import prepare_fmri

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
prepare_fmri(sm.params.dataset, int(sm.wildcards.subject), sm.output[0])
