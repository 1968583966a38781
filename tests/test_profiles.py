"""The Snakemake profiles: profiles/default (applied to every run) and profiles/slurm (cluster, GPU rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "profiles" / "default" / "config.yaml"
SLURM = ROOT / "profiles" / "slurm" / "config.yaml"
RULES_DIR = ROOT / "workflow" / "rules"
GPU_RULES = ("extract_features",)
# sbatch options that snakemake-executor-plugin-slurm sets itself and rejects inside slurm_extra
PLUGIN_OPTIONS = re.compile(
    r"--(gres|gpus|mem|mem-per-cpu|partition|account|time|cpus-per-task|cpus-per-gpu|ntasks|nodes|qos|constraint"
    r"|job-name|output|error|export|comment|workdir)\b|(^|\s)-[pAtcNCJoenD]\b"
)


def load(path: Path) -> dict:
    with open(path) as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


@pytest.fixture(scope="module")
def default() -> dict:
    return load(DEFAULT)


@pytest.fixture(scope="module")
def slurm() -> dict:
    return load(SLURM)


@pytest.fixture(scope="module")
def cli_options() -> set[str]:
    from snakemake.cli import get_argument_parser

    return {s for action in get_argument_parser()._actions for s in action.option_strings}


@pytest.mark.parametrize("path", [DEFAULT, SLURM], ids=["default", "slurm"])
def test_every_key_is_a_snakemake_option(path, cli_options):
    unknown = sorted(key for key in load(path) if f"--{key}" not in cli_options)
    assert not unknown, f"{path.relative_to(ROOT)}: not Snakemake options: {unknown}"


def test_default_profile_is_for_local_runs(default):
    assert default["cores"] == "all"
    assert default["rerun-incomplete"] is True
    assert default["printshellcmds"] is True
    assert default["keep-going"] is False
    assert isinstance(default["latency-wait"], int) and default["latency-wait"] >= 5


def test_default_profile_leaves_cluster_and_conda_settings_alone(default):
    """profiles/default wins over --profile profiles/slurm for every key it sets, and runs without conda here."""
    cluster_keys = {"executor", "jobs", "default-resources", "set-resources", "set-threads", "retries", "groups",
                    "group-components", "software-deployment-method", "sdm", "use-conda", "replace-workflow-config"}
    assert not cluster_keys & set(default)


def test_slurm_profile_sets_no_key_the_default_profile_overrides(default, slurm):
    shadowed = sorted(set(default) & set(slurm))
    assert not shadowed, f"profiles/default overrides these keys of profiles/slurm, so they have no effect: {shadowed}"


def test_slurm_profile_basics(slurm):
    assert slurm["executor"] == "slurm"
    assert slurm["jobs"] == 100
    assert slurm["software-deployment-method"] == "conda"
    assert slurm["retries"] >= 1
    defaults = slurm["default-resources"]
    assert {"slurm_partition", "mem_mb", "runtime"} <= set(defaults)
    assert "$" in defaults["slurm_partition"], "the partition should come from an environment variable"


def _evaluate(value, attempt: int = 1):
    """A resource value as Snakemake evaluates it (a Python expression in attempt and threads)."""
    if isinstance(value, str):
        try:
            return eval(value, {"attempt": attempt, "threads": 1})  # noqa: S307 - the profile's own expressions
        except (NameError, SyntaxError):
            return value
    return value


@pytest.mark.parametrize("rule", GPU_RULES)
def test_gpu_rules_request_a_gpu(slurm, rule):
    resources = slurm["set-resources"][rule]
    gpus = _evaluate(resources.get("gpu", 0))
    gres = str(resources.get("gres", ""))
    assert (isinstance(gpus, int) and gpus >= 1) or re.fullmatch(r"gpu(:\w+)?:[1-9]\d*", gres), (
        f"{rule} requests no GPU in profiles/slurm (set gpu: 1)"
    )
    assert not ("gpu" in resources and "gres" in resources), "the plugin refuses gpu and gres together"
    assert "GPU" in str(resources.get("slurm_partition", "")), f"{rule} should run on the GPU partition"


def test_memory_and_runtime_evaluate_and_grow_with_attempts(slurm):
    for rule, resources in {"<default>": slurm["default-resources"], **slurm["set-resources"]}.items():
        for key in ("mem_mb", "runtime"):
            if key in resources:
                first, third = _evaluate(resources[key], 1), _evaluate(resources[key], 3)
                assert isinstance(first, int) and first > 0, f"{rule}.{key} = {resources[key]!r}"
                assert third >= first, f"{rule}.{key} shrinks on retries"


def test_slurm_extra_holds_no_option_the_plugin_sets(slurm):
    for rule, resources in {"<default>": slurm["default-resources"], **slurm["set-resources"]}.items():
        extra = str(resources.get("slurm_extra", "")).strip("'\"")
        assert not PLUGIN_OPTIONS.search(extra), f"{rule}: slurm_extra {extra!r} sets an option the plugin manages"


def test_groups_are_complete(slurm):
    groups = slurm.get("groups", {})
    assert {"prepare_fmri", "prepare_meg"} <= set(groups)
    for name, count in slurm.get("group-components", {}).items():
        assert name in groups.values(), f"group-components names unknown group {name}"
        assert isinstance(count, int) and count >= 1


def test_profile_rules_exist_in_the_workflow(slurm):
    """A renamed rule would silently lose its resources, threads or group."""
    smk = list(RULES_DIR.glob("*.smk"))
    if not smk:
        pytest.skip("workflow/rules has no .smk files yet")
    rules = {m for path in smk for m in re.findall(r"^(?:rule|checkpoint)\s+(\w+)\s*:", path.read_text(), re.M)}
    named = set(slurm.get("set-resources", {})) | set(slurm.get("set-threads", {})) | set(slurm.get("groups", {}))
    missing = sorted(named - rules)
    assert not missing, f"profiles/slurm names rules that workflow/rules/*.smk does not define: {missing}"
