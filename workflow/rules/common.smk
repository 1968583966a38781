import functools
import math
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, update_config, validate

min_version("9.0")

from gradbrain import config as config_keys  # noqa: E402
from gradbrain.data.download import files as dl  # noqa: E402
from gradbrain.models.catalogue import ENTRY_KEYS, model_spec  # noqa: E402
from gradbrain.models.catalogue import weight_files  # noqa: E402
from gradbrain.features.kinds import BASE_KINDS, check_encoded_kinds  # noqa: E402
from gradbrain.simulation.scenarios import driver_kinds  # noqa: E402
from gradbrain.encoding.cv import check_folds  # noqa: E402
from gradbrain.jobsize import simulated_train_images  # noqa: E402

SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
# --config values arrive as strings ('encoding={folds: 10}' gives '10'): type them as the schema does, then stop on
# any key that neither the schema nor the model catalogue knows, before validate() fills in the defaults
_schema = config_keys.load_schema(SCHEMA)
update_config(
    config, config_keys.typed_overrides(workflow.config_settings.config, _schema)
)
config_keys.check_keys(config, _schema, ENTRY_KEYS)
try:
    validate(config, SCHEMA)
except WorkflowError as err:
    raise ValueError(config_keys.schema_message(err)) from None
check_encoded_kinds(config["encoding"].get("kinds", []), config["extraction"]["kinds"])

RESULTS = config["results"]
MODELS = {
    name: model_spec(name, entry or {}) for name, entry in config["models"].items()
}
DATASETS = config["datasets"]
SIM = config.get("simulation", {})
SIM_ROOT = SIM.get("root", "data/sim")


TRAINING_KEYS = (
    "name",
    "source",
    "arch",
    "kwargs",
    "input_size",
    "crop_pct",
    "family",
    "blocks",
    "n_blocks",
)
DRIVER_KEYS = TRAINING_KEYS + ("n_layers", "pooling", "objective", "weights")


def spec_subset(model, keys):
    """The part of a model's resolved entry that a rule depends on (other edits do not re-run it)."""
    return {k: MODELS[model][k] for k in keys if k in MODELS[model]}


def driver_spec(model):
    """The spec a driver of the simulated brain is read with: its entry's training keys (shared with
    train_demo_model, which writes the weights it loads) and, for the other DRIVER_KEYS, its catalogue entry
    overridden by simulation.driver; so editing an analysed model's pooling, objective or n_layers leaves the
    simulated brain alone."""
    entry = config["models"][model] or {}
    own = {
        **model_spec(model, {"catalogue": entry.get("catalogue", model)}),
        **SIM["driver"],
    }
    return {
        **spec_subset(model, TRAINING_KEYS),
        **{k: own[k] for k in DRIVER_KEYS if k not in TRAINING_KEYS},
    }


def stimuli_settings():
    """The simulation keys that decide the stimuli and driver features (so other edits keep them)."""
    keys = ("seed", "image_size", "driver_models", "readout_components")
    settings = {
        **{k: SIM[k] for k in keys if k in SIM},
        "fmri": {"n_images": SIM["fmri"]["n_images"]},
        "meg": {k: SIM["meg"][k] for k in ("n_images", "n_test_images")},
    }
    if "eeg" in SIM:  # the THINGS-EEG2-like study's images, only when it is configured
        settings["eeg"] = {k: SIM["eeg"][k] for k in ("n_images", "n_test_images")}
    # a learning-rule scenario needs its drivers' errors, seeded as the extraction's
    kinds = driver_kinds(SIM.get("scenarios", []))
    if kinds != BASE_KINDS:
        settings.update(
            driver_kinds=list(kinds), rule_seed=config["extraction"]["rule_seed"]
        )
    return settings


def _sim_sessions():
    fmri = SIM["fmri"]
    return math.ceil(fmri["n_images"] * fmri["repeats"] / fmri["trials_per_session"])


for _name, _spec in MODELS.items():
    for _role, _path in weight_files(_spec).items():
        if not os.path.exists(_path):
            raise FileNotFoundError(
                f"models.{_name}.{_role}.file: {_path} does not exist; fix the path, or remove the key "
                "(config/README.md, models)"
            )
SIMULATED = any(ds.get("simulated") for ds in DATASETS.values())
SIM_DRIVERS = SIM.get("driver_models", []) if SIMULATED else []
for _m in SIM_DRIVERS:
    if _m not in MODELS:
        raise ValueError(
            f"simulation.driver_models: '{_m}' is not under models ({', '.join(MODELS)}); "
            "add it there, since the simulated brain is driven by the analysed models"
        )
for _name, _ds in DATASETS.items():
    if _ds.get("simulated") and config_keys.study_block(_ds) not in SIM:
        raise ValueError(
            f"datasets.{_name}: a simulated {_ds['format']} dataset reads the study that simulation."
            f"{config_keys.study_block(_ds)} configures, and the config has no such section; add it "
            "(config/overlays/sim_eeg2.yaml) or remove the dataset"
        )
dl.check_subjects(DATASETS, SIM)
for _name, _ds in DATASETS.items():
    _ds["name"] = _name
    if _ds.get("simulated") and _ds["simulated"] not in SIM.get("scenarios", []):
        raise ValueError(
            f"datasets.{_name}.simulated: '{_ds['simulated']}' is not in simulation.scenarios "
            f"{SIM.get('scenarios', [])}; add it there or point the dataset at a real root"
        )
    if _ds.get("simulated") and _ds["modality"] == "fmri":
        _ds.setdefault("sessions", _sim_sessions())
        _ds.setdefault("trials_per_session", SIM["fmri"]["trials_per_session"])
    if _ds["modality"] == "fmri":
        from gradbrain.data.nsd.paths import COMPLETED_SESSIONS

        if _ds.get("rois"):
            _ds["rois"] = config_keys.active_rois(_ds["rois"], f"datasets.{_name}.rois")

        _s = _ds.get("sessions")
        _ds["sessions"] = {
            int(sub): (
                _s[sub]
                if isinstance(_s, dict)
                else _s if _s is not None else COMPLETED_SESSIONS[int(sub)]
            )
            for sub in _ds["subjects"]
        }


dl.check_roots(DATASETS)
dl.check_local_files(DATASETS)
# a simulated dataset's training images are known now; a real one's are counted by its encoding job
for _name, _ds in DATASETS.items():
    if _ds.get("simulated"):
        _block = config_keys.study_block(_ds)
        check_folds(
            simulated_train_images(_ds, SIM),
            int(config["encoding"]["folds"]),
            f"datasets.{_name} (simulation.{_block}.n_images: {SIM[_block]['n_images']})",
        )


def datasets_of(modality):
    return [name for name, ds in DATASETS.items() if ds["modality"] == modality]


def _alternation(names):
    return "|".join(names) if names else "__none__"


wildcard_constraints:
    model=_alternation(MODELS),
    dataset=_alternation(DATASETS),
    scenario=_alternation(SIM.get("scenarios", [])),
    subject=r"\d+",


FMRI_DATASETS = _alternation(datasets_of("fmri"))
MEG_DATASETS = _alternation(datasets_of("meg"))


@functools.lru_cache(maxsize=None)
def _local_files(dataset, subject):
    return dl.local_files(DATASETS[dataset], subject)


def dataset_input(wildcards):
    """The files a dataset's loaders read: the simulated study, the download targets (download: true; see
    data.smk), or the files of a pre-downloaded root (listed once per job kind), so that a replaced file re-runs
    the jobs that read it."""
    ds = DATASETS[wildcards.dataset]
    subject = getattr(wildcards, "subject", None)
    if ds.get("simulated"):
        return f"{SIM_ROOT}/{ds['simulated']}"
    if ds.get("download"):
        return dl.download_targets(ds, subject)
    return list(_local_files(wildcards.dataset, subject))


# keys of a dataset that do not change which images it shows: datasets of simulated studies that agree on the rest
# differ only in their scenario and show the same stimuli (simulation.study writes them from the shared stimuli.zarr)
_IMAGE_NEUTRAL_KEYS = ("name", "simulated", "root", "images_root", "rois")


def _image_key(ds):
    return {k: v for k, v in ds.items() if k not in _IMAGE_NEUTRAL_KEYS}


def features_dataset(name):
    """The dataset whose features store dataset ``name`` is encoded from: itself, or for a simulated study the first
    configured simulated dataset that shows the same images, so each model is extracted once per stimulus set.
    """
    ds = DATASETS[name]
    if not ds.get("simulated"):
        return name
    return next(
        other
        for other, o in DATASETS.items()
        if o.get("simulated") and _image_key(o) == _image_key(ds)
    )


def features_input(wildcards):
    return f"{RESULTS}/features/{features_dataset(wildcards.dataset)}/{wildcards.model}.zarr"


def weights_input(wildcards):
    """Demo models' weights come from train_demo_model, others from weights.file (an input, so that a file replaced
    at the same path re-runs the jobs that read it) or else the hub cache."""
    spec = MODELS[wildcards.model]
    if spec["weights"].get("demo"):
        return f"{RESULTS}/models/{wildcards.model}.pt"
    return weight_files(spec).get("weights", [])


def decoder_input(wildcards):
    """The MAE decoder checkpoint of the mae_recon objective (decoder.file), read with the model."""
    return weight_files(MODELS[wildcards.model]).get("decoder", [])


def encoding_files():
    out = []
    for name, ds in DATASETS.items():
        for model in MODELS:
            for sub in ds["subjects"]:
                out.append(f"{RESULTS}/encoding/{name}/{model}/sub-{sub}.zarr")
    return out


def brain_of(path):
    """The brain store an encoding store was fitted to."""
    dataset, _, sub = Path(path).parts[-3:]
    return f"{RESULTS}/brain/{dataset}/{sub}"


def all_targets():
    """The summary and every configured dataset's encodings: if a dataset's jobs cannot be made, the run stops with
    Snakemake's MissingInputException instead of leaving the dataset (and the pending summary) out because the
    tables of an earlier run are present."""
    return [
        *encoding_files(),
        f"{RESULTS}/hierarchy/scores.csv",
        f"{RESULTS}/hierarchy/tests.csv",
        f"{RESULTS}/figures",
        f"{RESULTS}/report",
    ]


# Memory (MB) and run time (min) of the jobs whose size grows with the study, estimated from the config by
# gradbrain.jobsize so that a cluster gets them at submission; a retried job asks for attempt x as much.
# profiles/slurm adds partitions and threads; local runs ignore both unless given --resources.
from gradbrain import jobsize  # noqa: E402


def _job_size(stage, wildcards):
    if stage == "prepare":
        return jobsize.prepare(DATASETS[wildcards.dataset], int(wildcards.subject), SIM)
    if stage == "extract":
        return jobsize.extract(
            DATASETS[wildcards.dataset],
            MODELS[wildcards.model],
            config["extraction"],
            SIM,
        )
    if stage == "encode":
        return jobsize.encode(
            DATASETS[wildcards.dataset],
            MODELS[wildcards.model],
            int(wildcards.subject),
            config["encoding"],
            SIM,
        )
    if stage == "hierarchy":
        return jobsize.hierarchy(DATASETS, MODELS, config["hierarchy"], SIM)
    raise ValueError(f"no job size estimate for stage '{stage}'")


def job_size(stage, key):
    """Resource callable: ``key`` (mem_mb or runtime) of a ``stage`` job from gradbrain.jobsize, x attempt."""
    return lambda wildcards, attempt: _job_size(stage, wildcards)[key] * attempt


def by_attempt(value):
    """Resource callable for jobs of a fixed size: ``value`` x attempt."""
    return lambda wildcards, attempt: value * attempt


def on_gpu(device):
    """GPUs a job asks for: one when its stage runs on a CUDA device."""
    return 1 if str(device).startswith("cuda") else 0


# ------------------------------------------------------------------ power analysis (power.smk)
from gradbrain.power import grid as power_grid  # noqa: E402

POWER = config.get("power", {})
POWER_CELLS = power_grid.cells(POWER, MODELS) if POWER else []
REAL_DATASETS = [n for n, d in DATASETS.items() if not d.get("simulated")]


def real_encoding_files():
    """Encoding stores of the real datasets: their image counts mark the power curves' operating point."""
    return [f for f in encoding_files() if Path(f).parts[-3] in REAL_DATASETS]


def power_cell_params(wildcards):
    """The grid cell a power_cell job computes."""
    return {
        "model": wildcards.model,
        "modality": wildcards.modality,
        "scenario": wildcards.planted,
        "noise": float(wildcards.noise),
        "n_images": int(wildcards.n_images),
        "drivers": power_grid.driver_names(
            POWER, wildcards.model, wildcards.planted, MODELS
        ),
    }


def power_cell_config(wildcards):
    """The config a power_cell job depends on (so that unrelated edits leave the cells alone)."""
    sim, enc = config["simulation"], config["encoding"]
    solver = (
        "folds",
        "seed",
        "alphas",
        "backend",
        "device",
        "dtype",
        "target_batch",
        "partition",
    )
    return {
        "simulation": {
            **{k: sim[k] for k in ("image_size", "readout_components") if k in sim},
            power_grid.simulation_block(wildcards.modality): sim[
                power_grid.simulation_block(wildcards.modality)
            ],
        },
        "encoding": {k: enc[k] for k in solver if k in enc},
        "hierarchy": config["hierarchy"],
        "power": {k: POWER[k] for k in power_grid.CELL_KEYS if k in POWER},
    }


def power_cell_features(wildcards):
    return {
        m: f"{RESULTS}/power/features/{m}.zarr"
        for m in power_cell_params(wildcards)["drivers"] + [wildcards.model]
    }
