"""Stage power (workflow/rules/power.smk): power_features, power_cell and power; one library call a rule."""

from gradbrain.logs import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
if sm.rule == "power_features":
    from gradbrain.models.load import load_model
    from gradbrain.power.features import extract_power_features

    p = sm.params
    model = load_model(p.spec, weights_path=str(sm.input.weights) or None, device=p.device)
    extract_power_features(
        sm.output[0], model, p.n_images, p.image_size, p.seed, p.batch_size, p.device, p.kinds, p.rule_seed,
        p.sketch_size, p.placebos,
    )  # fmt: skip
elif sm.rule == "power_cell":
    from gradbrain.power.stage import write_cell

    write_cell(sm.params.cell, dict(sm.input.items()), sm.params.config, sm.output[0])
elif sm.rule == "power":
    from gradbrain.power.stage import power_outputs

    scores = sm.input.scores[0] if sm.input.scores else None
    power_outputs(sm.input.cells, scores, list(sm.input.encoding), sm.params.power, sm.params.datasets, sm.output)
else:
    raise ValueError(f"workflow/scripts/power.py does not run rule {sm.rule}")
