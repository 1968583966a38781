"""Stage simulation (workflow/rules/simulation.smk): demo models, stimuli, planted studies; one library call a rule."""

from gradbrain.logs import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads)
if sm.rule == "train_demo_model":
    from gradbrain.simulation.demo import train_demo_model

    stats = train_demo_model(sm.params.spec, sm.output[0], **sm.params.training)
    log.info("trained %s: %s", sm.wildcards.model, stats)
elif sm.rule == "simulate_stimuli":
    from gradbrain.models.load import load_model
    from gradbrain.simulation.stimuli import make_stimuli

    drivers = sm.params.simulation["driver_models"]
    models = [load_model(sm.params.specs[m], weights_path=w) for m, w in zip(drivers, sm.input.weights, strict=True)]
    make_stimuli(sm.output[0], sm.params.simulation, models)
elif sm.rule == "simulate_study":
    from gradbrain.simulation.study import simulate_study

    simulate_study(sm.output[0], sm.wildcards.scenario, sm.params.simulation, sm.input[0])
else:
    raise ValueError(f"workflow/scripts/simulation.py does not run rule {sm.rule}")
