rule encode_fmri:
    """Cross-validated ridge from every layer and kind onto one subject's voxels."""
    wildcard_constraints:
        dataset=FMRI_DATASETS,
    input:
        features=f"{RESULTS}/features/{{dataset}}/{{model}}.zarr",
        brain=f"{RESULTS}/brain/{{dataset}}/sub-{{subject}}.zarr",
    output:
        directory(f"{RESULTS}/encoding/{{dataset}}/{{model}}/sub-{{subject}}.zarr"),
    params:
        encoding=config["encoding"],
    log:
        f"{RESULTS}/logs/encode_fmri/{{dataset}}/{{model}}/sub-{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/encode_fmri/{{dataset}}/{{model}}/sub-{{subject}}.tsv"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/stats.yaml"
    script:
        "../scripts/encode.py"


rule encode_meg:
    """Cross-validated ridge from every layer and kind onto one subject's sensors x times."""
    wildcard_constraints:
        dataset=MEG_DATASETS,
    input:
        features=f"{RESULTS}/features/{{dataset}}/{{model}}.zarr",
        brain=f"{RESULTS}/brain/{{dataset}}/sub-{{subject}}.zarr",
    output:
        directory(f"{RESULTS}/encoding/{{dataset}}/{{model}}/sub-{{subject}}.zarr"),
    params:
        encoding=config["encoding"],
    log:
        f"{RESULTS}/logs/encode_meg/{{dataset}}/{{model}}/sub-{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/encode_meg/{{dataset}}/{{model}}/sub-{{subject}}.tsv"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/stats.yaml"
    script:
        "../scripts/encode.py"
