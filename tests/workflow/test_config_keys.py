"""The config before validation (workflow/gradbrain/config.py): --config values typed by the schema, unknown keys.

The typing is checked against Snakemake's own --config parser (snakemake.cli.parse_config) and PyYAML's safe_load
of the same text; the checks stop real dry runs (``snakemake -n``) when the DAG is built.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml
from helpers import REPO
from helpers.snakerun import run_snakemake
from snakemake.cli import parse_config
from snakemake.utils import update_config, validate

from gradbrain import config as config_keys
from gradbrain.features.kinds import check_encoded_kinds
from gradbrain.models.catalogue import ENTRY_KEYS, load_catalogue

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = config_keys.load_schema(SCHEMA_PATH)
DEFAULT = REPO / "config" / "config.yaml"

# --config entries as config/README.md documents them, each with every value typed (YAML's flow syntax)
DOCUMENTED = [
    "encoding={folds: 10}",
    "encoding={folds: 10, alphas: [1, 10, 100], target_batch: null, own_contribution: [fmri]}",
    "encoding={alphas: {start: -2, stop: 6, num: 9}}",
    "extraction={autocast: null, compile: true, pca_components: 64, kinds: [activations, gradients]}",
    "demo_training={lr: 0.0005, epochs: 2}",
    "hierarchy={fdr_alpha: 0.01, permutations: 500}",
    "simulation={meg: {gradient_latency: [0.4, 0.95], noise: 2}, driver: {n_layers: 6}}",
    "models={demo_vit: {n_layers: 4, batch_size: 32, kwargs: {depth: 4}, demo_training: {epochs: 1}}}",
    "power={n_images: [100, 300], noise: {meg: [0.5, 2.0]}, models: null, own_contribution: true}",
]


def default_config() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


@pytest.mark.parametrize("entry", DOCUMENTED)
def test_config_values_get_the_types_a_config_file_gives(entry):
    key, text = entry.split("=", 1)
    parsed = parse_config([entry])  # what Snakemake hands the workflow: every nested scalar a string
    typed = config_keys.typed_overrides(parsed, SCHEMA)
    assert typed == {key: yaml.safe_load(text)}
    config = default_config()
    update_config(config, typed)
    validate(config, str(SCHEMA_PATH))


def test_strings_stay_strings_where_the_schema_says_string():
    typed = config_keys.typed_overrides(parse_config(["simulation={root: 2024, scenarios: [backprop]}"]), SCHEMA)
    assert typed == {"simulation": {"root": "2024", "scenarios": ["backprop"]}}
    # 1e-3 is a string to PyYAML (YAML 1.1 floats need a dot); a number key still gets the float
    typed = config_keys.typed_overrides(parse_config(["demo_training={lr: 1e-3}"]), SCHEMA)
    assert typed == {"demo_training": {"lr": 0.001}}


def test_config_from_the_command_line_reaches_a_dry_run():
    """Every documented --config form through a real `snakemake -n` (before: ''10' is not of type 'integer'')."""
    proc = run_snakemake(DEFAULT, "-n", "--quiet", "rules", "--config", *DOCUMENTED, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _with(path: str, value) -> dict:
    config = default_config()
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[last] = value
    return config


MISSPELT = [
    ("encoding.fold", "encoding.folds"),
    ("extraktion", "extraction"),
    ("models.demo_vit.poolng", "models.demo_vit.pooling"),
    ("datasets.sim_backprop_meg.preprocessing.tmx", "datasets.sim_backprop_meg.preprocessing.tmax"),
]


@pytest.mark.parametrize(("key", "meant"), MISSPELT)
def test_an_unknown_key_is_named_with_the_closest_valid_key(key, meant):
    messages = config_keys.unknown_keys(_with(key, 1), SCHEMA, ENTRY_KEYS)
    assert messages == [f"config key '{key}' is unknown; did you mean '{meant}'?"]


@pytest.mark.parametrize(("key", "meant"), MISSPELT)
def test_an_unknown_key_stops_the_dry_run(tmp_path, key, meant):
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(_with(key, 1)))
    proc = run_snakemake(configfile, "-n", "--quiet", "rules", check=False)
    assert proc.returncode != 0
    assert f"config key '{key}' is unknown; did you mean '{meant}'?" in proc.stdout + proc.stderr


def test_a_dotted_key_is_unknown():
    messages = config_keys.unknown_keys({**default_config(), "encoding.folds": 10}, SCHEMA, ENTRY_KEYS)
    assert messages == [
        "config key 'encoding.folds' is unknown; did you mean 'encoding'? (a nested key is written encoding: "
        "{folds: ...})"
    ]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("models.demo_vit.kwargs", {"depth": 4}),  # a catalogue key
        ("models.demo_vit.n_blocks", 8),
        ("models.demo_cnn.demo_training.n_images", 800),  # overrides the global demo_training
        ("power.hierarchy.fdr_alpha", 0.01),  # overrides hierarchy
        ("datasets.sim_backprop_fmri.sessions", 3),
        ("datasets.sim_backprop_fmri.rois.floc-bodies", ["EBA"]),  # an atlas: a name, not a key
        ("simulation.driver.pooling", "cls"),
    ],
)
def test_keys_that_exist_are_accepted(path, value):
    assert config_keys.unknown_keys(_with(path, value), SCHEMA, ENTRY_KEYS) == []


def test_unknown_keys_inside_lists_and_sections_without_keys():
    config = default_config()
    config["simulation"]["fmri"]["rois"] = [{"atlas": "streams", "nme": "V1", "depth": 0.0}]
    config["report"] = {"dpi": 300}
    config["models"]["demo_vit"]["weights"] = {"demo": True, "fille": "w.pt"}
    assert config_keys.unknown_keys(config, SCHEMA, ENTRY_KEYS) == [
        "config key 'models.demo_vit.weights.fille' is unknown; did you mean 'models.demo_vit.weights.file'?",
        "config key 'simulation.fmri.rois[0].nme' is unknown; did you mean 'simulation.fmri.rois[0].name'?",
        "config key 'report.dpi' is unknown; 'report' takes no keys",
    ]
    with pytest.raises(ValueError, match="config/README.md"):
        config_keys.check_keys(config, SCHEMA, ENTRY_KEYS)


def test_without_the_catalogue_keys_a_model_override_is_unknown():
    config = default_config()
    config["models"]["demo_vit"]["arch"] = "vit_small_patch16_224"
    assert config_keys.unknown_keys(config, SCHEMA, ENTRY_KEYS) == []
    assert config_keys.unknown_keys(config, SCHEMA) == [
        f"config key 'models.demo_vit.arch' is unknown; the keys of 'models.demo_vit' are: "
        f"{', '.join(sorted(SCHEMA['$defs']['model']['properties']))}"
    ]


def test_every_catalogue_key_may_be_overridden():
    used = {key for entry in load_catalogue().values() for key in entry}
    assert used <= set(ENTRY_KEYS), f"resources/models.yaml uses keys missing from ENTRY_KEYS: {used - set(ENTRY_KEYS)}"


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_have_no_unknown_key(path):
    assert config_keys.unknown_keys(yaml.safe_load(path.read_text()), SCHEMA, ENTRY_KEYS) == []


@pytest.mark.parametrize("path", sorted((REPO / "config" / "power").glob("*.yaml")), ids=lambda p: p.name)
def test_overlay_configs_have_no_unknown_key_merged_over_the_default(path):
    merged = default_config()
    update_config(merged, yaml.safe_load(path.read_text()))
    assert config_keys.unknown_keys(copy.deepcopy(merged), SCHEMA, ENTRY_KEYS) == []


def test_the_module_imports_nothing_heavy():
    """It is read when the DAG is built: the standard library and yaml only."""
    code = "import sys, gradbrain.config; print(sorted(m for m in ('numpy', 'torch', 'snakemake') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO / "workflow"
    )
    assert out.stdout.strip() == "[]"


def test_a_misspelt_encoding_kind_stops_the_dry_run():
    """Before: `gradient` matched no kind of the features store and the study ran without its gradients."""
    proc = run_snakemake(DEFAULT, "-n", "--quiet", "rules", "--config", "encoding={kinds: [activations, gradient]}",
                         check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "encoding.kinds: 'gradient' is not a kind of extraction.kinds [activations, gradients]" in out, out[-2000:]
    assert "did you mean 'gradients'?" in out


def test_an_encoding_kind_that_is_not_extracted_says_where_to_add_it():
    with pytest.raises(ValueError, match="add it to extraction.kinds"):
        check_encoded_kinds(["activations", "sign_symmetry"], ["activations", "gradients"])
    check_encoded_kinds(["gradients"], ["activations", "gradients", "sign_symmetry"])


def test_a_null_model_entry_says_what_to_write(tmp_path):
    """`demo_vit:` with nothing after it: before, its error was buried in a 296-line dump of the schema."""
    config = default_config()
    config["models"]["demo_vit"] = None
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = run_snakemake(configfile, "-n", "--quiet", "rules", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key 'models.demo_vit' is empty (null); write `demo_vit: {}`" in out, out[-3000:]
    assert len(out.splitlines()) < 40, "no schema dump"


def test_a_schema_error_is_one_message_naming_the_key(tmp_path):
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(_with("models.demo_cnn.objective", "ce_psuedo")))
    proc = run_snakemake(configfile, "-n", "--quiet", "rules", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key 'models.demo_cnn.objective': 'ce_psuedo' is not one of ['ce_pseudo'" in out, out[-3000:]
    assert len(out.splitlines()) < 40, "no schema dump"


BROKEN_YAML = "models:\n  demo_vit: {}\n   demo_cnn: {}\n"


def test_read_yaml_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_YAML)
    with pytest.raises(ValueError, match=rf"{path}, line 3, column 4: expected <block end>") as err:
        config_keys.read_yaml(path)
    assert "indented" in str(err.value)
    (tmp_path / "good.yaml").write_text("a: {b: 1}\n")
    assert config_keys.read_yaml(tmp_path / "good.yaml") == {"a": {"b": 1}}


def test_a_yaml_error_in_the_embedded_config_names_its_line(tmp_path):
    """config/config.yaml, read by the Snakefile (before: "Config file is not valid JSON or YAML" and no line)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(BROKEN_YAML)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--workflow-profile", "none", "--cores", "1", "-n"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "config/config.yaml, line 3, column 4" in proc.stdout + proc.stderr
