"""Rule train_demo_model: the snakemake object in, one library call."""

from gradbrain.logs import setup
from gradbrain.train_demo import train_demo_model

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads)
stats = train_demo_model(sm.params.spec, sm.output[0], **sm.params.training)
log.info("trained %s: %s", sm.wildcards.model, stats)
