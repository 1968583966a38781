"""Rules download_nsd and download_things_meg: one object from anonymous S3, resumable and size-checked."""

from gradbrain import download
from gradbrain.logs import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0])
if sm.params.terms is not None:
    download.require_nsd_terms(sm.params.terms["accepted"], sm.params.terms["dataset"])
download.download_object(download.s3_client(), sm.params.bucket, sm.params.key, sm.output[0], log=log.info)
