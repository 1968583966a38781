# Acquisition of the real datasets (datasets.<name>.download: true); the file lists (files.py) and the transfers
# (transfer.py) live in workflow/gradbrain/data/download/. Every job fetches one file, so an interrupted run resumes
# file by file.
NSD_ROOTS = dl.roots_pattern(
    ds["root"] for ds in dl.download_datasets(DATASETS, "nsd").values()
)
MEG_ROOTS = dl.roots_pattern(
    ds["root"] for ds in dl.download_datasets(DATASETS, "things_meg").values()
)
THINGS_IMAGE_URLS = dl.image_urls(DATASETS)
IMAGE_ROOTS = dl.roots_pattern(THINGS_IMAGE_URLS)
EEG2_ROOTS = dl.roots_pattern(
    ds["root"] for ds in dl.download_datasets(DATASETS, "things_eeg2").values()
)
EEG2_IMAGE_ROOTS = dl.roots_pattern(
    ds["images_root"] for ds in dl.download_datasets(DATASETS, "things_eeg2").values()
)


localrules:
    download_nsd,
    download_things_meg,
    download_things_images,
    download_things_eeg2,
    download_things_eeg2_metadata,


# One NSD file from s3://natural-scenes-dataset (anonymous), only after the user accepted the NSD terms; resumable.
rule download_nsd:
    output:
        "{nsd_root}/{key}",
    log:
        f"{RESULTS}/logs/download_nsd/{{nsd_root}}/{{key}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download_nsd/{{nsd_root}}/{{key}}.tsv"
    wildcard_constraints:
        nsd_root=NSD_ROOTS,
        key=r"nsddata(_betas|_stimuli)?/.+",
    conda:
        "../../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        bucket=dl.NSD_BUCKET,
        key=lambda wc: wc.key,
        terms=lambda wc: dl.nsd_terms(DATASETS, wc.nsd_root),
    script:
        "../scripts/data.py"


# One file of a participant's preprocessed THINGS-MEG epochs from OpenNeuro ds004212 (anonymous S3, CC0); resumable.
rule download_things_meg:
    output:
        "{meg_root}/derivatives/preprocessed/{epochs}",
    log:
        f"{RESULTS}/logs/download_things_meg/{{meg_root}}/{{epochs}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download_things_meg/{{meg_root}}/{{epochs}}.tsv"
    wildcard_constraints:
        meg_root=MEG_ROOTS,
        epochs=r"preprocessed_P\d+-epo(-\d+)?\.fif",
    conda:
        "../../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        bucket=dl.OPENNEURO_BUCKET,
        key=lambda wc: dl.openneuro_key(f"derivatives/preprocessed/{wc.epochs}"),
        terms=None,
    script:
        "../scripts/data.py"


# The THINGS image archive from OSF (needs THINGS_PASSWORD, i.e. the accepted image terms); resumable.
rule download_things_images:
    output:
        temp(f"{{images_root}}/{dl.THINGS_ARCHIVE}"),
    log:
        f"{RESULTS}/logs/download_things_images/{{images_root}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download_things_images/{{images_root}}.tsv"
    wildcard_constraints:
        images_root=IMAGE_ROOTS,
    conda:
        "../../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        url=lambda wc: THINGS_IMAGE_URLS[wc.images_root],
    script:
        "../scripts/data.py"


# The password-protected THINGS archive -> <images_root>/object_images/<concept>/<file>.
rule unpack_things_images:
    input:
        f"{{images_root}}/{dl.THINGS_ARCHIVE}",
    output:
        directory("{images_root}/object_images"),
    log:
        f"{RESULTS}/logs/unpack_things_images/{{images_root}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/unpack_things_images/{{images_root}}.tsv"
    wildcard_constraints:
        images_root=IMAGE_ROOTS,
    conda:
        "../../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/data.py"


# One THINGS-EEG2 archive from OSF (a participant's sub-XX.zip, or an image folder's zip); MD5 checked.
rule download_things_eeg2:
    output:
        temp("{eeg2_dir}/{archive}.zip"),
    log:
        f"{RESULTS}/logs/download_things_eeg2/{{eeg2_dir}}/{{archive}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download_things_eeg2/{{eeg2_dir}}/{{archive}}.tsv"
    wildcard_constraints:
        eeg2_dir=f"{EEG2_ROOTS}|{EEG2_IMAGE_ROOTS}",
        archive=r"sub-\d\d|training_images|test_images",
    conda:
        "../../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        node=lambda wc: dl.things_eeg2_node(wc.archive),
        name=lambda wc: f"{wc.archive}.zip",
    script:
        "../scripts/data.py"


# THINGS-EEG2's image_metadata.npy from OSF (the image set's project); MD5 checked.
rule download_things_eeg2_metadata:
    output:
        "{eeg2_images}/image_metadata.npy",
    log:
        f"{RESULTS}/logs/download_things_eeg2_metadata/{{eeg2_images}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download_things_eeg2_metadata/{{eeg2_images}}.tsv"
    wildcard_constraints:
        eeg2_images=EEG2_IMAGE_ROOTS,
    conda:
        "../../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        node=dl.THINGS_EEG2_IMAGES_NODE,
        name="image_metadata.npy",
    script:
        "../scripts/data.py"


# A participant's sub-XX.zip -> <root>/sub-XX/preprocessed_eeg_{training,test}.npy.
rule unpack_things_eeg2:
    input:
        "{eeg2_root}/sub-{nn}.zip",
    output:
        "{eeg2_root}/sub-{nn}/preprocessed_eeg_training.npy",
        "{eeg2_root}/sub-{nn}/preprocessed_eeg_test.npy",
    log:
        f"{RESULTS}/logs/unpack_things_eeg2/{{eeg2_root}}/sub-{{nn}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/unpack_things_eeg2/{{eeg2_root}}/sub-{{nn}}.tsv"
    wildcard_constraints:
        eeg2_root=EEG2_ROOTS,
        nn=r"\d\d",
    conda:
        "../../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/data.py"


# training_images.zip / test_images.zip -> <images_root>/{training,test}_images/<NNNNN_concept>/<file>.jpg.
rule unpack_things_eeg2_images:
    input:
        "{eeg2_images}/{part}.zip",
    output:
        directory("{eeg2_images}/{part}"),
    log:
        f"{RESULTS}/logs/unpack_things_eeg2_images/{{eeg2_images}}/{{part}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/unpack_things_eeg2_images/{{eeg2_images}}/{{part}}.tsv"
    wildcard_constraints:
        eeg2_images=EEG2_IMAGE_ROOTS,
        part="training_images|test_images",
    conda:
        "../../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/data.py"


# NSD betas -> z-scored, repeat-averaged voxel targets with coordinates, ROI, distance from V1, noise ceiling.
rule prepare_fmri:
    input:
        dataset_input,
    output:
        directory(f"{RESULTS}/brain/{{dataset}}/sub-{{subject}}.zarr"),
    log:
        f"{RESULTS}/logs/prepare_fmri/{{dataset}}/sub-{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_fmri/{{dataset}}/sub-{{subject}}.tsv"
    wildcard_constraints:
        dataset=FMRI_DATASETS,
    conda:
        "../../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=job_size("prepare", "mem_mb"),
        runtime=job_size("prepare", "runtime"),
    params:
        dataset=lambda wc: DATASETS[wc.dataset],
    script:
        "../scripts/data.py"


# THINGS-MEG epochs or THINGS-EEG2's preprocessed EEG -> low-passed, resampled, z-scored sensor x time targets.
rule prepare_meg:
    input:
        dataset_input,
    output:
        directory(f"{RESULTS}/brain/{{dataset}}/sub-{{subject}}.zarr"),
    log:
        f"{RESULTS}/logs/prepare_meg/{{dataset}}/sub-{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_meg/{{dataset}}/sub-{{subject}}.tsv"
    wildcard_constraints:
        dataset=MEG_DATASETS,
    conda:
        "../../envs/neuro.yaml"
    threads: 1
    resources:
        mem_mb=job_size("prepare", "mem_mb"),
        runtime=job_size("prepare", "runtime"),
    params:
        dataset=lambda wc: DATASETS[wc.dataset],
    script:
        "../scripts/data.py"
