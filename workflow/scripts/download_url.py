"""Rule download_things_images: the THINGS archive over HTTPS, once the image terms are accepted (THINGS_PASSWORD)."""

from gradbrain import download
from gradbrain.logs import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0])
download.things_password()
download.download_url(sm.params.url, sm.output[0], log=log.info)
