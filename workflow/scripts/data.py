"""Stage data (workflow/rules/data.smk): downloads, the THINGS archive, the brain stores; one library call a rule."""

from pathlib import Path

from gradbrain.logs import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads)
if sm.rule in ("download_nsd", "download_things_meg"):
    from gradbrain.data.download import files, transfer

    if sm.params.terms is not None:
        files.require_nsd_terms(sm.params.terms["accepted"], sm.params.terms["dataset"])
    transfer.download_object(transfer.s3_client(), sm.params.bucket, sm.params.key, sm.output[0], log=log.info)
elif sm.rule == "download_things_images":
    from gradbrain.data.download import things_images, transfer

    things_images.things_password()
    transfer.download_url(sm.params.url, sm.output[0], log=log.info)
elif sm.rule == "unpack_things_images":
    from gradbrain.data.download import things_images

    things_images.unpack_things_images(
        sm.input[0], Path(sm.output[0]).parent, things_images.things_password(), log=log.info
    )
elif sm.rule in ("download_things_eeg2", "download_things_eeg2_metadata"):
    from gradbrain.data.download import things_eeg2

    things_eeg2.download_osf(sm.params.node, sm.params.name, sm.output[0], log=log.info)
elif sm.rule == "unpack_things_eeg2":
    from gradbrain.data.download import things_eeg2

    things_eeg2.unpack_subject(sm.input[0], Path(sm.output[0]).parent)
elif sm.rule == "unpack_things_eeg2_images":
    from gradbrain.data.download import things_eeg2

    things_eeg2.unpack_images(sm.input[0], sm.output[0])
elif sm.rule == "prepare_fmri":
    from gradbrain.data.prepare import prepare_fmri

    prepare_fmri(sm.params.dataset, int(sm.wildcards.subject), sm.output[0])
elif sm.rule == "prepare_meg":
    from gradbrain.data.prepare import prepare_meg

    prepare_meg(sm.params.dataset, int(sm.wildcards.subject), sm.output[0])
else:
    raise ValueError(f"workflow/scripts/data.py does not run rule {sm.rule}")
