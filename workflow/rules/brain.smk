rule prepare_fmri:
    """NSD betas -> z-scored, repeat-averaged voxel targets with coordinates, ROI, distance from V1, noise ceiling."""
    wildcard_constraints:
        dataset=FMRI_DATASETS,
    input:
        dataset_input,
    output:
        directory(f"{RESULTS}/brain/{{dataset}}/sub-{{subject}}.zarr"),
    params:
        dataset=lambda wc: DATASETS[wc.dataset],
    log:
        f"{RESULTS}/logs/prepare_fmri/{{dataset}}/sub-{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_fmri/{{dataset}}/sub-{{subject}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/neuro.yaml"
    script:
        "../scripts/prepare_fmri.py"


rule prepare_meg:
    """THINGS-MEG epochs -> low-passed, resampled, z-scored sensor x time targets."""
    wildcard_constraints:
        dataset=MEG_DATASETS,
    input:
        dataset_input,
    output:
        directory(f"{RESULTS}/brain/{{dataset}}/sub-{{subject}}.zarr"),
    params:
        dataset=lambda wc: DATASETS[wc.dataset],
    log:
        f"{RESULTS}/logs/prepare_meg/{{dataset}}/sub-{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_meg/{{dataset}}/sub-{{subject}}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
    conda:
        "../../envs/neuro.yaml"
    script:
        "../scripts/prepare_meg.py"
