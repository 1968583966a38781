"""Stage encoding (workflow/rules/encoding.smk): rules encode_fmri and encode_meg, one library call."""

from gradbrain.encoding.stage import encode_subject
from gradbrain.logs import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
encode_subject(sm.input.features, sm.input.brain, sm.output[0], sm.params.encoding)
