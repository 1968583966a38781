# Pooled activations and per-image gradients of every sampled layer (GPU on a cluster). The rule declares what
# the SLURM profile needs to place it: one GPU when the device is CUDA, num_workers + 1 CPUs (image decoding runs
# in worker processes), host memory and a runtime estimated from the dataset and model (gradbrain.jobsize) that grow
# with each retry.
rule extract_features:
    input:
        data=dataset_input,
        weights=weights_input,
        decoder=decoder_input,
    output:
        directory(f"{RESULTS}/features/{{dataset}}/{{model}}.zarr"),
    log:
        f"{RESULTS}/logs/extract_features/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_features/{{dataset}}/{{model}}.tsv"
    conda:
        "../../envs/extract.yaml"
    threads: int(config["extraction"]["num_workers"]) + 1
    resources:
        mem_mb=job_size("extract", "mem_mb"),
        runtime=job_size("extract", "runtime"),
        gpu=on_gpu(config["extraction"]["device"]),
    params:
        spec=lambda wc: MODELS[wc.model],
        dataset=lambda wc: DATASETS[wc.dataset],
        extraction=config["extraction"],
    script:
        "../scripts/features.py"
