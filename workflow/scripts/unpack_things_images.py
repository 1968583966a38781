"""Rule unpack_things_images: the password-protected archive -> object_images/<concept>/<file>."""

from pathlib import Path

from gradbrain import download
from gradbrain.logs import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0])
download.unpack_things_images(sm.input[0], Path(sm.output[0]).parent, download.things_password(), log=log.info)
