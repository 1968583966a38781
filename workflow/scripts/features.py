"""Stage features (workflow/rules/features.smk): rule extract_features, the snakemake object in, one library call."""

from gradbrain.data.prepare import concept_names, dataset_stimulus_ids, image_reader
from gradbrain.features.extract import extract_to_zarr
from gradbrain.features.objectives import make_objective
from gradbrain.logs import progress, setup
from gradbrain.models.load import compile_blocks, load_model

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads)
cfg, dataset = sm.params.extraction, sm.params.dataset
spec = sm.params.spec
model = load_model(spec, weights_path=str(sm.input.weights) or None, device=cfg["device"])
if cfg.get("compile"):
    compile_blocks(model)
ids = dataset_stimulus_ids(dataset)
objective = make_objective(model, names=concept_names(dataset, ids))
workers = min(int(cfg["num_workers"]), max(sm.threads - 1, 0))
log.info(
    "%s on %s: %d stimuli, %d layers, objective %s, %d decoding workers",
    spec["name"], dataset["name"], len(ids), len(model.layer_names), spec["objective"], workers,
)  # fmt: skip
extract_to_zarr(
    model, objective, image_reader(dataset), list(ids), sm.output[0],
    batch_size=int(spec.get("batch_size", cfg["batch_size"])), chunk_images=int(cfg["chunk_images"]),
    device=cfg["device"], store_dtype=cfg["store_dtype"], autocast=cfg.get("autocast"),
    num_workers=workers, pca_components=cfg.get("pca_components"),
    progress=progress(f"{dataset['name']}/{spec['name']}"),
    kinds=cfg["kinds"], rule_seed=int(cfg["rule_seed"]), sketch_size=int(cfg["sketch_size"]),
    placebos=int(cfg["placebos"]),
)  # fmt: skip
