"""Rule power_features: the snakemake object in, one library call."""

from gradbrain.logs import setup
from gradbrain.models import load_model
from gradbrain.power import extract_power_features

sm = snakemake  # noqa: F821
setup(sm.log[0], sm.threads)
p = sm.params
model = load_model(p.spec, weights_path=str(sm.input.weights) or None, device=p.device)
extract_power_features(sm.output[0], model, p.n_images, p.image_size, p.seed, p.batch_size, p.device, p.kinds,
                       p.rule_seed, p.sketch_size)
