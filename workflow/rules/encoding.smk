# Cross-validated ridge from every layer and kind onto one subject's voxels (fMRI).
rule encode_fmri:
    input:
        features=features_input,
        brain=f"{RESULTS}/brain/{{dataset}}/sub-{{subject}}.zarr",
    output:
        directory(f"{RESULTS}/encoding/{{dataset}}/{{model}}/sub-{{subject}}.zarr"),
    log:
        f"{RESULTS}/logs/encode_fmri/{{dataset}}/{{model}}/sub-{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/encode_fmri/{{dataset}}/{{model}}/sub-{{subject}}.tsv"
    wildcard_constraints:
        dataset=FMRI_DATASETS,
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=job_size("encode", "mem_mb"),
        runtime=job_size("encode", "runtime"),
        gpu=on_gpu(config["encoding"]["device"]),
    params:
        encoding=config["encoding"],
    script:
        "../scripts/encoding.py"


# The same fits onto one subject's sensors x times: a rule of its own, so that `snakemake --until encode_meg` stops
# after the MEG fits.
use rule encode_fmri as encode_meg with:
    log:
        f"{RESULTS}/logs/encode_meg/{{dataset}}/{{model}}/sub-{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/encode_meg/{{dataset}}/{{model}}/sub-{{subject}}.tsv"
    wildcard_constraints:
        dataset=MEG_DATASETS,
