"""Rule prepare_meg: the snakemake object in, one library call."""

from gradbrain.logs import setup
from gradbrain.prepare import prepare_meg

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
prepare_meg(sm.params.dataset, int(sm.wildcards.subject), sm.output[0])
