# Pooled activations and gradients of one model on the power analysis' crops (GPU on a cluster).
rule power_features:
    input:
        weights=weights_input,
        decoder=decoder_input,
    output:
        directory(f"{RESULTS}/power/features/{{model}}.zarr"),
    log:
        f"{RESULTS}/logs/power_features/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/power_features/{{model}}.tsv"
    conda:
        "../../envs/extract.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=lambda wc: 1 if config["extraction"]["device"].startswith("cuda") else 0,
    params:
        spec=lambda wc: spec_subset(wc.model, DRIVER_KEYS),
        n_images=max(POWER.get("n_images", [0])),
        image_size=SIM.get("image_size", 64),
        seed=POWER.get("image_seed", 100),
        batch_size=POWER.get("batch_size", 100),
        device=config["extraction"]["device"],
        kinds=power_grid.power_kinds(POWER),
        rule_seed=config["extraction"].get("rule_seed", 0),
        sketch_size=config["extraction"].get("sketch_size", 16),
        placebos=config["extraction"].get("placebos", 0),
    script:
        "../scripts/power.py"


# One grid cell: seeds x subjects of one planted study simulated, encoded and scored in memory.
rule power_cell:
    input:
        unpack(power_cell_features),
    output:
        f"{RESULTS}/power/cells/{{model}}/{{modality}}/{{planted}}/noise-{{noise}}_images-{{n_images}}.csv",
    log:
        f"{RESULTS}/logs/power_cell/{{model}}/{{modality}}/{{planted}}/noise-{{noise}}_images-{{n_images}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/power_cell/{{model}}/{{modality}}/{{planted}}/noise-{{noise}}_images-{{n_images}}.tsv"
    wildcard_constraints:
        modality="fmri|meg|eeg",
        planted=r"[a-z_]+",
        noise=r"[0-9.eE+-]+",
        n_images=r"\d+",
    conda:
        "../../envs/extract.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        cell=power_cell_params,
        config=power_cell_config,
    script:
        "../scripts/power.py"


# Rate of every test per grid cell, and power curves with the real data's operating point when it is configured.
rule power:
    input:
        cells=[f"{RESULTS}/power/cells/{power_grid.cell_name(c)}" for c in POWER_CELLS],
        scores=[f"{RESULTS}/hierarchy/scores.csv"] if REAL_DATASETS else [],
        encoding=real_encoding_files(),
    output:
        table=f"{RESULTS}/power/power.csv",
        figure=report(
            f"{RESULTS}/power/power_curves.png",
            caption="../report/power.rst",
            category="Power",
        ),
        operating_points=f"{RESULTS}/power/operating_points.csv",
    log:
        f"{RESULTS}/logs/power.log",
    conda:
        "../../envs/extract.yaml"
    threads: 1
    params:
        power=POWER,
        datasets=DATASETS,
    script:
        "../scripts/power.py"
