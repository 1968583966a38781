"""Rules encode_fmri and encode_meg: the snakemake object in, one library call."""

from gradbrain.encode import encode_subject
from gradbrain.logs import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
encode_subject(sm.input.features, sm.input.brain, sm.output[0], sm.params.encoding)
