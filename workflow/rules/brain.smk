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
        "../scripts/prepare_fmri.py"


# THINGS-MEG epochs -> low-passed, resampled, z-scored sensor x time targets.
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
        "../scripts/prepare_meg.py"
