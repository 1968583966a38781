"""The Snakemake profiles: profiles/default (applied to every run) and profiles/slurm (cluster, GPU rules)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO
from helpers.rules import rule_blocks

ROOT = REPO
DEFAULT = ROOT / "profiles" / "default" / "config.yaml"
SLURM = ROOT / "profiles" / "slurm" / "config.yaml"
RULES_DIR = ROOT / "workflow" / "rules"
GPU_RULES = ("extract_features", "encode_fmri", "encode_meg")
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
    assert default["rerun-incomplete"] is True
    assert default["printshellcmds"] is True
    assert default["keep-going"] is False
    assert isinstance(default["latency-wait"], int) and default["latency-wait"] >= 5


def test_default_profile_leaves_cluster_and_conda_settings_alone(default):
    """profiles/default wins over --profile profiles/slurm for every key it sets, and runs without conda here."""
    cluster_keys = {
        "cores",  # Snakemake caps every job's threads at --cores, on a cluster too: `all` is the login node's count
        "max-threads",
        "executor",
        "jobs",
        "default-resources",
        "set-resources",
        "set-threads",
        "retries",
        "groups",
        "group-components",
        "software-deployment-method",
        "sdm",
        "use-conda",
        "replace-workflow-config",
    }
    assert not cluster_keys & set(default)


def test_slurm_profile_sets_no_key_the_default_profile_overrides(default, slurm):
    shadowed = sorted(set(default) & set(slurm))
    assert not shadowed, f"profiles/default overrides these keys of profiles/slurm, so they have no effect: {shadowed}"


def test_slurm_profile_basics(slurm):
    assert slurm["executor"] == "slurm"
    assert slurm["jobs"] == 100
    assert not {"software-deployment-method", "sdm", "use-conda", "use-apptainer"} & set(slurm), (
        "a user adds --sdm conda or --sdm apptainer; the profile must run without conda"
    )
    assert slurm["cores"] >= max(slurm["set-threads"].values()), "--cores caps every job's threads"
    assert slurm["retries"] >= 1
    assert slurm["slurm-requeue"] is True, "preempted jobs should go back into the queue"
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


def test_gpu_rules_go_to_the_gpu_partition(slurm):
    """The rules ask for a GPU themselves (from the config's devices); the profile sends them to the GPU partition."""
    for rule in GPU_RULES:
        resources = slurm["set-resources"][rule]
        assert resources.get("slurm_partition") == "$GRADBRAIN_GPU_PARTITION", f"{rule} should run on the GPU partition"
        assert "gpu" not in resources and "gres" not in resources, (
            f"profiles/slurm sets a GPU for {rule}, which would override the rule's own request (none on the CPU)"
        )


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
    rules = {name for _, name, _ in rule_blocks()}
    named = set(slurm.get("set-resources", {})) | set(slurm.get("set-threads", {})) | set(slurm.get("groups", {}))
    missing = sorted(named - rules)
    assert not missing, f"profiles/slurm names rules that workflow/rules/*.smk does not define: {missing}"


# --------------------------------------------------------------------------- job resources in a dry run
def path_without_conda() -> str:
    """PATH without the folders that hold a conda, mamba or micromamba executable."""
    tools = ("conda", "mamba", "micromamba")
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in folders if d and not any((Path(d) / t).exists() for t in tools))


def dry_run_jobs(profile: str, configfile: Path, env: dict[str, str]) -> list[tuple[str, dict[str, str], dict]]:
    """(rule, wildcards, resources and threads) of every job that ``snakemake -n --forceall --profile <profile>``
    plans (forced, so that outputs already in the checkout do not hide jobs), with the workflow profile applied as
    for a user."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--forceall",
        "--profile",
        str(profile),
        "--configfile",
        str(configfile),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(ROOT),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(rf"Using profiles? \S*{re.escape(profile)}\b", proc.stdout + proc.stderr), proc.stdout[:300]
    jobs: list[tuple[str, dict[str, str], dict]] = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")):
            jobs.append((line.split()[1].rstrip(":"), {}, {"threads": 1}))
        elif line.startswith("wildcards:") and jobs:
            jobs[-1][1].update(kv.split("=", 1) for kv in line.removeprefix("wildcards:").strip().split(", "))
        elif line.startswith("threads:") and jobs:
            jobs[-1][2]["threads"] = int(line.removeprefix("threads:"))
        elif line.startswith("resources:") and jobs:
            for kv in line.removeprefix("resources:").strip().split(", "):
                key, value = kv.split("=", 1)
                jobs[-1][2][key] = int(value) if value.isdigit() else value
    return jobs


@pytest.fixture(scope="module")
def planned_resources(tmp_path_factory):
    """Dry runs through profiles/slurm as it is: of the paper with a PATH that has no conda, and of the embedded
    default through the profile installed as a named profile, as README.md tells (a symlink in the user's Snakemake
    config directory, then `--profile slurm`)."""
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="needs snakemake-executor-plugin-slurm")
    xdg = tmp_path_factory.mktemp("xdg")
    (xdg / "snakemake").mkdir()
    (xdg / "snakemake" / "slurm").symlink_to(SLURM.parent, target_is_directory=True)
    env = {"GRADBRAIN_PARTITION": "cpu", "GRADBRAIN_GPU_PARTITION": "gpu", "XDG_CONFIG_HOME": str(xdg)}
    return {
        "paper.yaml": dry_run_jobs(
            str(SLURM.parent), ROOT / "config" / "paper.yaml", {**env, "PATH": path_without_conda()}
        ),
        "config.yaml": dry_run_jobs("slurm", ROOT / "config" / "config.yaml", env),
    }


def test_path_without_conda_drops_the_folders_with_conda(tmp_path, monkeypatch):
    with_conda, without = tmp_path / "miniforge" / "bin", tmp_path / "bin"
    for folder in (with_conda, without):
        folder.mkdir(parents=True)
    (with_conda / "conda").touch()
    (without / "python").touch()
    monkeypatch.setenv("PATH", os.pathsep.join([str(with_conda), str(without)]))
    assert path_without_conda() == str(without)


def test_dry_run_gives_jobs_the_threads_the_profile_sets(planned_resources, slurm):
    """Every planned job gets the threads profiles/slurm sets for its rule, whatever the cores of the machine that
    submits (profiles/default sets no cores); the plugin passes them to sbatch as --cpus-per-task or --cpus-per-gpu."""
    for config, jobs in planned_resources.items():
        for rule, threads in slurm["set-threads"].items():
            planned = [res["threads"] for r, _, res in jobs if r == rule]
            assert planned and set(planned) == {threads}, (config, rule, planned)


def test_dry_run_sizes_nsd_jobs_larger_than_the_demo(planned_resources):
    """The SLURM dry run of the paper asks for more memory and time for NSD and THINGS-MEG than for the demo."""

    def sizes(config: str, rule: str, key: str) -> list[int]:
        values = [res[key] for r, _, res in planned_resources[config] if r == rule]
        assert values, f"no {rule} job in the dry run of {config}"
        return values

    for rule in ("prepare_fmri", "prepare_meg", "extract_features", "encode_fmri", "encode_meg", "hierarchy"):
        assert min(sizes("paper.yaml", rule, "mem_mb")) > max(sizes("config.yaml", rule, "mem_mb")), rule
        assert min(sizes("paper.yaml", rule, "runtime")) >= max(sizes("config.yaml", rule, "runtime")), rule
    nsd = [res["mem_mb"] for r, wc, res in planned_resources["paper.yaml"] if r == "encode_fmri"]
    assert all(m >= 8000 for m in nsd), "an NSD subject's voxels and ViT-L features need several GB"


def test_dry_run_puts_gpu_jobs_on_the_gpu_partition(planned_resources):
    """config/paper.yaml runs extraction and ridge on CUDA: those jobs ask for one GPU on the GPU partition; the
    embedded default runs on the CPU and asks for none."""
    for config, gpus in (("paper.yaml", 1), ("config.yaml", 0)):
        for rule, wildcards, res in planned_resources[config]:
            if rule in GPU_RULES:
                assert res.get("gpu", 0) == gpus, (config, rule, wildcards, res)
                assert res["slurm_partition"] == "gpu", (config, rule, res)
            elif rule != "all":
                assert res["slurm_partition"] == "cpu" and not res.get("gpu"), (config, rule, res)
