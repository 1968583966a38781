# Train a small catalogue model for about a minute (no pretrained weights offline).
rule train_demo_model:
    output:
        f"{RESULTS}/models/{{model}}.pt",
    log:
        f"{RESULTS}/logs/train_demo_model/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_demo_model/{{model}}.tsv"
    conda:
        "../../envs/extract.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(4000),
        runtime=by_attempt(30),
    params:
        spec=lambda wc: spec_subset(wc.model, TRAINING_KEYS),
        training=lambda wc: {
            **config.get("demo_training", {}),
            **MODELS[wc.model].get("demo_training", {}),
        },
    script:
        "../scripts/simulation.py"


# Crops of scikit-image's photographs and the driver models' features on them, shared by every scenario.
rule simulate_stimuli:
    input:
        weights=[f"{RESULTS}/models/{m}.pt" for m in SIM_DRIVERS],
    output:
        directory(f"{SIM_ROOT}/stimuli.zarr"),
    log:
        f"{RESULTS}/logs/simulate_stimuli.log",
    benchmark:
        f"{RESULTS}/benchmarks/simulate_stimuli.tsv"
    conda:
        "../../envs/extract.yaml"
    threads: 2
    resources:
        mem_mb=by_attempt(4000),
        runtime=by_attempt(30),
    params:
        simulation=stimuli_settings(),
        specs={m: driver_spec(m) for m in SIM_DRIVERS},
    script:
        "../scripts/simulation.py"


# A planted-truth study in the real NSD and THINGS-MEG formats (and THINGS-EEG2's, with simulation.eeg).
rule simulate_study:
    input:
        f"{SIM_ROOT}/stimuli.zarr",
    output:
        directory(f"{SIM_ROOT}/{{scenario}}"),
    log:
        f"{RESULTS}/logs/simulate_study/{{scenario}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/simulate_study/{{scenario}}.tsv"
    conda:
        "../../envs/extract.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(4000),
        runtime=by_attempt(30),
    params:
        simulation=SIM,
    script:
        "../scripts/simulation.py"
