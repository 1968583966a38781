"""The config schema (workflow/schemas/config.schema.yaml) against the embedded default and its documentation.

Validation goes through ``snakemake.utils.validate``, the call the Snakefile makes, so the defaults it fills in are
the ones the rules see.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from helpers import REPO
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

from gradbrain import config as config_keys
from gradbrain.models.catalogue import ENTRY_KEYS

ROOT = REPO
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
CONFIG_PATH = ROOT / "config" / "config.yaml"
README_PATH = ROOT / "config" / "README.md"
SECTIONS = ("results", "extraction", "demo_training", "simulation", "encoding", "hierarchy", "power")


def load(path: Path):
    with open(path) as fh:
        return yaml.safe_load(fh)


@pytest.fixture()
def config() -> dict:
    return load(CONFIG_PATH)


def check(cfg: dict) -> dict:
    validate(cfg, str(SCHEMA_PATH))
    return cfg


def schema_error(cfg: dict) -> str:
    with pytest.raises(WorkflowError) as err:
        check(cfg)
    return str(err.value)


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(load(SCHEMA_PATH))


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    """config/config.yaml and any further study (config/paper.yaml) are complete configs on their own."""
    check(load(path))


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "power").glob("*.yaml")), ids=lambda p: p.name)
def test_overlay_configs_validate_merged_over_the_default(path):
    """config/power/*.yaml are given with --configfile beside the default, which Snakemake updates key by key."""
    merged = load(CONFIG_PATH)
    update_config(merged, load(path))
    check(merged)
    assert merged["datasets"] == check(load(CONFIG_PATH))["datasets"]  # the overlay only changes the power grid


OVERLAY_BASES = {"paper_visual.yaml": "paper.yaml", "things_eeg2.yaml": "paper.yaml", "sim_eeg2.yaml": "config.yaml"}
"""The config each of config/overlays/*.yaml is given beside (its header says so)."""


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "overlays").glob("*.yaml")), ids=lambda p: p.name)
def test_dataset_overlays_validate_merged_over_their_base(path):
    """config/overlays/*.yaml add or change datasets of the study named in their header; merged over it (key by
    key, as Snakemake does) the result validates and has no unknown key."""
    assert path.name in OVERLAY_BASES, f"{path.name}: add it to OVERLAY_BASES with the config it overlays"
    merged = load(ROOT / "config" / OVERLAY_BASES[path.name])
    update_config(merged, load(path))
    assert config_keys.unknown_keys(copy.deepcopy(merged), config_keys.load_schema(SCHEMA_PATH), ENTRY_KEYS) == []
    check(merged)


def test_defaults_are_filled_in(config):
    del config["encoding"]["folds"]
    del config["hierarchy"]
    del config["simulation"]["meg"]["n_catch"]
    check(config)
    assert config["encoding"]["folds"] == 5
    assert config["hierarchy"]["permutations"] == 1000
    assert config["simulation"]["meg"]["n_catch"] == 40
    assert config["report"] == {}
    assert config["models"]["demo_vit"]["n_layers"] == 22
    # format-specific defaults land only in datasets of that format
    fmri, meg = config["datasets"]["sim_backprop_fmri"], config["datasets"]["sim_backprop_meg"]
    assert fmri["beta_format"] == "nii.gz" and fmri["space"] == "func1pt8mm" and fmri["heldout"] is None
    assert fmri["distance_space"] == "native"
    assert "preprocessing" not in fmri
    assert meg["preprocessing"] == {  # the config sets tmax; the rest are the schema's defaults
        "lowpass": 20.0,
        "sfreq": 30.0,
        "tmin": None,
        "tmax": 1.05,
        "zscore": True,
        "split": "standard",
    }
    assert "beta_format" not in meg and "distance_space" not in meg
    assert meg["simulated"] == "backprop" and meg["download"] is False


def test_catalogue_keys_get_no_default(config):
    """A default for objective, pooling or weights would override the model catalogue (resources/models.yaml)."""
    check(config)
    for key in ("objective", "pooling", "weights", "catalogue", "batch_size", "input_size"):
        assert key not in config["models"]["demo_cnn"]


def test_defaults_equal_the_embedded_config(config):
    """A config that gives only models and datasets runs with the embedded default's settings."""
    minimal = check({"models": copy.deepcopy(config["models"]), "datasets": copy.deepcopy(config["datasets"])})
    embedded = check(copy.deepcopy(config))
    for section in SECTIONS:
        assert minimal[section] == embedded[section], section


def test_a_given_value_is_kept(config):
    config["encoding"]["alphas"] = [1.0, 10.0, 100.0]
    config["encoding"]["target_batch"] = None
    config["datasets"]["sim_backprop_fmri"]["sessions"] = {1: 3, 2: 3}
    config["datasets"]["sim_backprop_meg"]["preprocessing"] = {"split": "zeroshot"}
    check(config)
    assert config["encoding"]["alphas"] == [1.0, 10.0, 100.0]
    assert config["encoding"]["target_batch"] is None
    assert config["datasets"]["sim_backprop_meg"]["preprocessing"]["split"] == "zeroshot"
    assert config["datasets"]["sim_backprop_meg"]["preprocessing"]["sfreq"] == 30.0


def _set(cfg: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    node = cfg
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("models.demo_vit.objective", "ce_psuedo", "objective"),
        ("models.demo_vit.pooling", "max", "pooling"),
        ("models.demo_cnn.n_layers", "all", "n_layers"),
        ("models.demo_cnn.weights", {"path": "w.pt"}, "weights"),
        ("extraction.device", "gpu", "device"),
        ("extraction.store_dtype", "int8", "store_dtype"),
        ("encoding.folds", "five", "folds"),
        ("encoding.backend", "cupy", "backend"),
        ("encoding.alphas", {"start": 0, "stop": 8}, "alphas"),
        ("hierarchy.fdr_alpha", 1.5, "fdr_alpha"),
        ("simulation.scenarios", ["backprop", "forward"], "scenarios"),
        ("simulation.fmri.n_subjects", 9, "n_subjects"),
        ("simulation.meg.gradient_latency", [0.45], "gradient_latency"),
        ("datasets.sim_backprop_fmri.modality", "eeg", "modality"),
        ("datasets.sim_backprop_fmri.format", "bids", "format"),
        ("datasets.sim_backprop_fmri.subjects", "1,2", "subjects"),
        ("datasets.sim_backprop_fmri.beta_format", "mat", "beta_format"),
        ("datasets.sim_backprop_fmri.heldout", "test", "heldout"),
        ("datasets.sim_backprop_fmri.distance_space", "talairach", "distance_space"),
        ("datasets.sim_backprop_meg.modality", "fmri", "modality"),
        ("datasets.sim_backprop_meg.simulated", "forward", "simulated"),
        ("datasets.sim_backprop_meg.preprocessing", {"split": "random"}, "split"),
        ("datasets.sim_backprop_meg.download", "yes", "download"),
    ],
)
def test_wrong_values_fail_naming_the_key(config, path, value, named):
    _set(config, path, value)
    message = schema_error(config)
    assert re.search(rf"\['{re.escape(named)}'\]", message), message


@pytest.mark.parametrize(
    ("dataset", "key"),
    [("sim_backprop_fmri", "rois"), ("sim_backprop_meg", "images_root"), ("sim_backprop_meg", "root")],
)
def test_required_dataset_keys(config, dataset, key):
    del config["datasets"][dataset][key]
    assert f"'{key}' is a required property" in schema_error(config)


@pytest.mark.parametrize("key", ["models", "datasets"])
def test_models_and_datasets_are_required(config, key):
    del config[key]
    assert f"'{key}' is a required property" in schema_error(config)


# ------------------------------------------------------------------------------------------------ documentation
def _properties(node: dict, schema: dict, path: str = ""):
    """(path, name, subschema, required) of every documented property, following $ref into $defs once."""
    if "$ref" in node:
        node = {**schema["$defs"][node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
    conditional = {}
    for branch in node.get("allOf", []):
        for name, sub in branch.get("then", {}).get("properties", {}).items():
            conditional.setdefault(name, {}).update(sub)
    for name, sub in node.get("properties", {}).items():
        full = f"{path}.{name}" if path else name
        merged = {**sub, **{k: v for k, v in conditional.get(name, {}).items() if k == "default"}}
        required = name in node.get("required", []) or name in {
            r for b in node.get("allOf", []) for r in b.get("then", {}).get("required", [])
        }
        yield full, name, merged, required
        yield from _properties(sub, schema, full)
    for branch in node.get("oneOf", []) + node.get("anyOf", []):
        if "properties" in branch:
            yield from _properties(branch, schema, path)
    for key in ("additionalProperties", "items"):
        child = node.get(key)
        if isinstance(child, dict) and ("properties" in child or "$ref" in child):
            yield from _properties(child, schema, f"{path}.<name>" if key == "additionalProperties" else f"{path}[]")


def test_every_key_has_a_description_and_a_default():
    schema = load(SCHEMA_PATH)
    for full, _, sub, required in _properties(schema, schema):
        description = sub.get("description") or schema["$defs"].get(sub.get("$ref", "#/").rsplit("/", 1)[1], {}).get(
            "description"
        )
        assert description, f"{full} has no description"
        if not required and full.count("[]") == 0:
            assert "default" in sub or "if absent" in description.lower(), (
                f"{full} is optional but has no default and does not say what its absence means"
            )


def test_readme_documents_every_key():
    schema, readme = load(SCHEMA_PATH), README_PATH.read_text()
    missing = sorted(
        {
            name
            for _, name, _, _ in _properties(schema, schema)
            if not re.search(rf"`([\w<>\\-]+\.)*{re.escape(name)}`", readme)
        }
    )
    assert not missing, f"config/README.md does not document: {missing}"


def _config_paths(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _config_paths(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        for item in node:
            for child in _config_paths(item, f"{path}[]"):
                if child != f"{path}[]":
                    yield child
    if path:
        yield path


def test_every_key_of_the_embedded_config_is_in_the_schema(config):
    """A key that config.yaml sets but the schema does not know is neither checked nor documented."""
    schema = load(SCHEMA_PATH)
    known = {full for full, _, _, _ in _properties(schema, schema)}
    generic = {re.sub(r"^(models|datasets)\.[^.\[]+", r"\1.<name>", path) for path in _config_paths(config)}
    generic = {re.sub(r"^(datasets\.<name>\.rois)\..*$", r"\1", p) for p in generic}
    missing = sorted(p for p in generic if p not in known and p not in {"models.<name>", "datasets.<name>"})
    assert not missing, f"config/config.yaml keys missing from the schema: {missing}"


def test_scenario_enums_are_the_simulations_scenarios():
    """The schema's scenario lists are simulation.scenarios': a study plants STUDY_SCENARIOS (a dataset reads one
    of them), the power grid every scenario of BRAINS."""
    from gradbrain.simulation.scenarios import SCENARIOS, STUDY_SCENARIOS

    schema = load(SCHEMA_PATH)
    props = schema["properties"]
    assert props["simulation"]["properties"]["scenarios"]["items"]["enum"] == list(STUDY_SCENARIOS)
    assert props["power"]["properties"]["scenarios"]["items"]["enum"] == list(SCENARIOS)
    ref = props["datasets"]["additionalProperties"]["$ref"].split("/")[-1]
    dataset = schema["$defs"][ref]["properties"]["simulated"]["enum"]
    assert dataset == [None, *STUDY_SCENARIOS]
