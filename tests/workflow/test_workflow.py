"""End to end: a small planted-truth study through the whole DAG, and the Snakemake conventions around it."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import REPO
from helpers.config import SCHEMA
from helpers.snakerun import SNAKEMAKE, run_snakemake
from snakemake.utils import validate

from gradbrain.power import cell as power_cell
from gradbrain.power import grid as power_grid


def small_config(tmp: Path) -> dict:
    """The default config, shrunk so the whole DAG runs in a few minutes on 2 cores, writing under ``tmp``."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg = copy.deepcopy(cfg)
    cfg["results"] = str(tmp / "results")
    sim = cfg["simulation"]
    sim["root"] = str(tmp / "data" / "sim")
    sim["fmri"].update(n_images=1000, n_subjects=1)
    sim["meg"].update(n_images=1000, n_subjects=1, n_test_images=4, n_catch=10)
    cfg["demo_training"].update(n_images=1500, epochs=3)
    cfg["hierarchy"].update(permutations=200, bootstraps=20)
    for ds in cfg["datasets"].values():
        ds["subjects"] = [1]
        ds["root"] = ds["root"].replace("data/sim", sim["root"])
        if "images_root" in ds:
            ds["images_root"] = ds["images_root"].replace("data/sim", sim["root"])
    return cfg


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    configfile = tmp / "config.yaml"
    configfile.write_text(yaml.safe_dump(small_config(tmp)))
    run_snakemake(configfile)
    return tmp, configfile


@pytest.mark.slow
def test_planted_truth_is_recovered(small_study):
    tmp, _ = small_study
    scores = pd.read_csv(tmp / "results" / "hierarchy" / "scores.csv")

    def value(dataset, model, kind, metric):
        sel = scores[
            (scores.dataset == dataset) & (scores.model == model) & (scores.kind == kind) & (scores.metric == metric)
        ]
        assert len(sel) == 1, (dataset, model, kind, metric)
        return float(sel.value.iloc[0])

    for model in ("demo_vit", "demo_cnn"):
        assert value("sim_backprop_fmri", model, "activations", "spatial_score") > 0.4
        assert value("sim_backprop_fmri", model, "gradients", "voxel_agreement") > 0.4
        assert value("sim_backprop_meg", model, "activations", "temporal_score") > 0.6
        assert value("sim_backprop_meg", model, "gradients", "temporal_score") < -0.6
        assert value("sim_misaligned_fmri", model, "gradients", "spatial_divergence") > 0.2
        assert value("sim_misaligned_meg", model, "gradients", "temporal_divergence") > 0.8
        for kind in ("activations", "gradients"):
            assert 0 < value("sim_backprop_fmri", model, kind, "layer_identifiability") <= 1
    tests = pd.read_csv(tmp / "results" / "hierarchy" / "tests.csv")
    assert list(tests.columns) == [
        "dataset",
        "model",
        "kind",
        "metric",
        "n_subjects",
        "mean",
        "sem",
        "statistic",
        "p",
        "p_fdr",
        "n_undefined",
        "note",
        "scope",
        "layer_identifiability",
    ]
    whole = tests[(tests.kind == "gradients") & (tests.metric == "spatial_score")]
    assert len(whole) and whole.scope.str.startswith("not gradient-specific").all()
    assert sorted(p.name for p in (tmp / "results" / "figures").glob("*.png"))


@pytest.mark.slow
def test_power_runs_on_the_trained_demo_models(small_study):
    """`snakemake power` on a one-point grid reuses the study's trained models: a cell per model and modality, the
    table and the curves; a stored cell equals a direct run of that planted study (power_cell.run_cell)."""
    tmp, configfile = small_study
    cfg = yaml.safe_load(configfile.read_text())
    cfg["power"].update(
        modalities=["meg", "fmri"],
        scenarios=["backprop"],
        noise={"meg": [0.3], "fmri": [0.7]},
        n_images=[200],
        n_subjects=[2],
        seeds=1,
        group_draws=50,
    )
    # 200 images cannot hold 8 layers x 32 control components + 32 gradient directions (check_partition_fits)
    cfg.setdefault("encoding", {}).setdefault("partition", {})["control_components"] = 8
    power_config = tmp / "power.yaml"
    power_config.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(power_config, "power")
    assert "train_demo_model" not in proc.stdout + proc.stderr  # the study's models are reused
    out = tmp / "results" / "power"
    table = pd.read_csv(out / "power.csv")
    assert set(table.model) == {"demo_vit", "demo_cnn"} and set(table.modality) == {"meg", "fmri"}
    assert (out / "power_curves.png").stat().st_size > 10_000
    forward = table[
        (table.modality == "meg")
        & (table.kind == "activations")
        & (table.metric == "temporal_score")
        & (table.test == "permutation")
        & (table.claim == "> 0")
    ]
    assert (forward.rate == 1).all() and (forward.planted == "effect").all()  # low noise: a clear forward sweep

    cell = {"model": "demo_cnn", "modality": "meg", "scenario": "backprop", "noise": 0.3, "n_images": 200}
    validated = copy.deepcopy(cfg)
    validate(validated, str(SCHEMA))  # the schema's defaults, as the workflow fills them in
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the job ran
    try:
        direct = power_cell.run_cell(cell, {"demo_cnn": str(out / "features" / "demo_cnn.zarr")}, validated)
    finally:
        torch.set_num_threads(threads)
    stored = pd.read_csv(out / "cells" / power_grid.cell_name(cell))
    keys = ["seed", "subject", "kind", "metric"]
    both = stored.merge(direct, on=keys, suffixes=("_stored", "_direct"))
    assert len(both) == len(stored) == len(direct) >= 40  # 2 subjects x 2 kinds x every MEG metric
    assert np.allclose(both.value_stored, both.value_direct, rtol=1e-5, atol=1e-6, equal_nan=True)


ARTEFACTS = REPO / "tests" / "artefacts"


@pytest.mark.slow
def test_report_opens_in_headless_chromium_with_every_image_loaded(small_study):
    """`snakemake --report` of the small study, opened in a real browser; screenshots land in tests/artefacts/."""
    from helpers.chromium import check_report, find_chromium

    tmp, configfile = small_study
    report = tmp / "report.html"
    run_snakemake(configfile, "--report", str(report))
    figures = sorted(p.name for p in (tmp / "results" / "figures").glob("*.png"))
    for dataset in ("sim_backprop_fmri", "sim_misaligned_fmri"):
        for model in ("demo_vit", "demo_cnn"):
            for figure in ("score_by_depth", "depth_vs_distance", "brain_map"):
                assert f"{dataset}__{model}__{figure}.png" in figures
    for dataset in ("sim_backprop_meg", "sim_misaligned_meg"):
        for model in ("demo_vit", "demo_cnn"):
            for figure in ("meg_time_courses", "depth_vs_latency", "meg_topomaps"):
                assert f"{dataset}__{model}__{figure}.png" in figures
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it): the report was "
            "built but not opened in a browser"
        )
    seen = check_report(binary, report, ARTEFACTS)
    print(f"report screenshots: {', '.join(map(str, seen['screenshots']))}")
    names = {Path(p).name: v for p, v in seen["results"].items()}
    assert set(names) == {*figures, "summary.png", "tests.html", "verdicts.html", "claims.html"}
    for name, view in names.items():
        assert view["width"] > 0 and view["height"] > 0, f"{name} did not render in the report: {view}"
    tests = pd.read_csv(tmp / "results" / "hierarchy" / "tests.csv")
    assert names["tests.html"]["rows"] == len(tests)
    verdicts = pd.read_csv(tmp / "results" / "hierarchy" / "verdicts.csv")
    assert names["verdicts.html"]["rows"] == len(verdicts)
    claims = pd.read_csv(tmp / "results" / "hierarchy" / "claims.csv")
    assert names["claims.html"]["rows"] == len(claims)
    assert not seen["problems"], "\n".join(seen["problems"])
    assert all(p.stat().st_size > 10_000 for p in seen["screenshots"])


def planned(configfile: Path, *args: str, env: dict | None = None) -> list[str]:
    """The jobs of a dry run: the rule, then its wildcards (``rule wildcards: a=1, b=2``)."""
    out = run_snakemake(configfile, "-n", *args, env=env).stdout
    jobs, rule = [], None
    for line in out.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
            jobs.append(rule)
        elif line.strip().startswith("wildcards:") and rule:
            jobs[-1] = f"{rule} {line.strip()}"
    return jobs


def model_jobs(cfg: dict, model: str, train: bool = False) -> list[str]:
    """Every job of one model under ``cfg`` (its features and encodings, its training), then the summary stages."""
    jobs = [f"train_demo_model wildcards: model={model}"] if train else []
    shown: dict[str, str] = {}
    for name, ds in cfg["datasets"].items():
        if shown.setdefault(ds["modality"], name) == name:  # every scenario's study shows the same images
            jobs.append(f"extract_features wildcards: dataset={name}, model={model}")
        rule = f"encode_{ds['modality']}"
        jobs += [f"{rule} wildcards: dataset={name}, model={model}, subject={s}" for s in ds["subjects"]]
    return sorted([*jobs, "hierarchy", "report", "all"])


@pytest.mark.slow
def test_rerun_is_a_no_op(small_study):
    _, configfile = small_study
    proc = run_snakemake(configfile, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "edit"),
    [
        ("demo_cnn", {"batch_size": 37}),
        ("demo_vit", {"pooling": "cls"}),
        ("demo_vit", {"objective": "ssl_view"}),
        ("demo_cnn", {"n_layers": 4}),
    ],
)
def test_one_model_edit_reruns_only_that_model(small_study, model, edit):
    """The demo models also drive the simulated brain, which reads them with a spec of its own (simulation.driver):
    editing how one is analysed re-runs its features, its encodings and the summary, not the simulation."""
    tmp, configfile = small_study
    cfg = yaml.safe_load(configfile.read_text())
    cfg["models"][model] = {**cfg["models"][model], **edit}
    edited = tmp / "edited.yaml"
    edited.write_text(yaml.safe_dump(cfg))
    assert sorted(planned(edited)) == model_jobs(cfg, model), f"only {model}'s features and encodings re-run"


@pytest.mark.slow
def test_editing_what_a_driver_is_trained_with_reruns_the_simulated_study(small_study):
    """The exception config/README.md states: a demo model's training decides the weights that drive the simulated
    brain, so it is re-trained, the studies are simulated again and every simulated dataset is analysed again."""
    tmp, configfile = small_study
    cfg = yaml.safe_load(configfile.read_text())
    cfg["models"]["demo_cnn"]["demo_training"] = {"epochs": 1}
    edited = tmp / "edited.yaml"
    edited.write_text(yaml.safe_dump(cfg))
    everything = planned(configfile, "--forceall")
    assert sorted(planned(edited)) == sorted(j for j in everything if j != "train_demo_model wildcards: model=demo_vit")


@pytest.mark.slow
def test_adding_a_model_reuses_every_existing_output(small_study):
    """A third model adds its own training, features and encodings; the summary is redone; nothing else re-runs."""
    tmp, configfile = small_study
    cfg = yaml.safe_load(configfile.read_text())
    cfg["models"]["demo_vit2"] = {"catalogue": "demo_vit", "n_layers": 4}
    added = tmp / "added.yaml"
    added.write_text(yaml.safe_dump(cfg))
    assert sorted(planned(added)) == model_jobs(cfg, "demo_vit2", train=True)


def test_until_encode_meg_plans_nothing_downstream(tmp_path):
    """On an empty study, --until encode_meg plans the MEG branch and stops: no fMRI, hierarchy or report jobs."""
    cfg = small_config(tmp_path)
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    jobs = planned(configfile, "--until", "encode_meg")
    rules = {j.split()[0] for j in jobs}
    assert rules == {
        "train_demo_model",
        "simulate_stimuli",
        "simulate_study",
        "prepare_meg",
        "extract_features",
        "encode_meg",
    }
    meg = [n for n, ds in cfg["datasets"].items() if ds["modality"] == "meg"]
    encodes = sorted(j for j in jobs if j.startswith("encode_meg"))
    assert encodes == sorted(
        f"encode_meg wildcards: dataset={d}, model={m}, subject=1" for d in meg for m in cfg["models"]
    )
    assert all(any(f"dataset={d}," in j for d in meg) for j in jobs if j.startswith(("extract", "prepare")))


def test_replaced_config_reaches_cluster_jobs(tmp_path):
    """--replace-workflow-config (profiles/slurm) makes a config file the whole config. Snakemake does not pass the
    flag to the jobs it submits; they get it from the environment and must see the same config as the main run."""
    cfg = small_config(tmp_path)
    cfg["simulation"]["scenarios"] = ["backprop"]
    cfg["datasets"] = {n: ds for n, ds in cfg["datasets"].items() if ds.get("simulated") == "backprop"}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    main = planned(configfile, "--replace-workflow-config")
    assert {j.split("dataset=")[1].split(",")[0] for j in main if "dataset=" in j} == set(cfg["datasets"])
    job = planned(configfile, env={"GRADBRAIN_REPLACE_WORKFLOW_CONFIG": "1"})  # a job: its config file, no flag
    assert sorted(job) == sorted(main)
    merged = run_snakemake(configfile, "-n", check=False, env={"GRADBRAIN_REPLACE_WORKFLOW_CONFIG": ""})
    assert merged.returncode != 0 and "sim_misaligned" in merged.stdout + merged.stderr, (
        "without it, config/config.yaml comes back"
    )


# ------------------------------------------------------------------------------------------ a real SLURM run
AVAILABLE = ("idle", "mix", "alloc", "comp")


def slurm_cluster() -> tuple[str | None, str]:
    """(why SLURM cannot be used here or None, the default partition)."""
    hint = "tests/slurm/start_cluster.sh (run by .ci/run as root) installs and starts a one-node cluster"
    for tool in ("sbatch", "sinfo", "squeue", "srun"):
        if shutil.which(tool) is None:
            return f"SLURM's {tool} is not on PATH; {hint}", ""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[dev]')", ""
    try:
        proc = subprocess.run(["sinfo", "--noheader", "--format=%P %t %m"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer in 30 s (slurmctld down?); {hint}", ""
    rows = [line.split() for line in proc.stdout.splitlines() if len(line.split()) == 3]
    up = [(p, int(m)) for p, state, m in rows if state.rstrip("*~#!%$@^-").startswith(AVAILABLE)]
    if proc.returncode or not up:
        return f"no available SLURM node (sinfo: {(proc.stdout + proc.stderr).strip()!r}); {hint}", ""
    partition, memory = next(((p, m) for p, m in up if p.endswith("*")), up[0])
    if memory < 4000:
        return f"the SLURM node has {memory} MB; the embedded default's jobs ask for up to 4000 MB", ""
    return None, partition.rstrip("*")


@pytest.fixture(scope="module")
def slurm_study(request, tmp_path_factory):
    """The backprop half of the small study through `snakemake --profile profiles/slurm`, every job a real sbatch job.

    The trained models and the simulated backprop study are copied from the local run (same config), so SLURM runs
    the analysis itself: preparation, extraction, encoding, hierarchy and figures. Dropping the misaligned datasets
    also checks that SLURM jobs see this config alone, not merged with config/config.yaml.
    """
    reason, partition = slurm_cluster()
    if reason:
        pytest.skip(reason)
    local, _ = request.getfixturevalue("small_study")
    tmp = tmp_path_factory.mktemp("slurm")
    cfg = small_config(tmp)
    cfg["simulation"]["scenarios"] = ["backprop"]
    cfg["datasets"] = {n: ds for n, ds in cfg["datasets"].items() if ds.get("simulated") == "backprop"}
    configfile = tmp / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    for rel in ("results/models", "data/sim/stimuli.zarr", "data/sim/backprop"):
        shutil.copytree(local / rel, tmp / rel)
    profile = REPO / "profiles" / "slurm"  # as it is: no conda here either
    logs = tmp / "slurm_logs"
    cmd = [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(REPO),
        "--profile",
        str(profile),
        "--configfile",
        str(configfile),
        # no slurmdbd here, so no sacct: the job states come from squeue (MinJobAge=600 keeps finished jobs)
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-logdir",
        str(logs),
        "--slurm-keep-successful-logs",
        # one thread per job as in the local run, so the numbers match and two jobs share the 2-CPU node
        "--set-threads",
        "extract_features=1",
        "encode_fmri=1",
        "encode_meg=1",
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0", "GRADBRAIN_PARTITION": partition, "GRADBRAIN_GPU_PARTITION": partition}
    env.pop("GRADBRAIN_REPLACE_WORKFLOW_CONFIG", None)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=1500)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() + (err.stderr or b"").decode()
        jobs = re.findall(r"submitted with SLURM jobid (\d+)", out)
        if jobs:
            subprocess.run(["scancel", *jobs], check=False)
        squeue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
        pytest.fail(f"the SLURM run took over 25 min; squeue:\n{squeue}\n{out[-4000:]}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"SLURM run failed ({proc.returncode}):\n{output[-8000:]}"
    return local, tmp, cfg, output, logs


def assert_same_rows(expected: pd.DataFrame, actual: pd.DataFrame, name: str, tolerance: float = 1e-4) -> None:
    """The same rows (matched on the text columns, subject and target) with numbers equal to ``tolerance``."""
    keys = [c for c in expected.columns if not pd.api.types.is_numeric_dtype(expected[c]) or c in ("subject", "target")]
    merged = expected.merge(actual, on=keys, how="outer", suffixes=("_expected", "_actual"), indicator=True)
    assert (merged["_merge"] == "both").all(), f"{name}: rows differ:\n{merged[merged['_merge'] != 'both'].head()}"
    assert len(merged) == len(expected) == len(actual), f"{name}: duplicate keys {keys}"
    for col in expected.columns.difference(keys):
        a = merged[f"{col}_expected"].to_numpy(float)
        b = merged[f"{col}_actual"].to_numpy(float)
        assert np.allclose(a, b, rtol=tolerance, atol=tolerance, equal_nan=True), f"{name}: column {col} differs"


@pytest.mark.slow
def test_slurm_run_submits_every_job_and_matches_the_local_run(slurm_study):
    local, tmp, cfg, output, logs = slurm_study
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    # the per-subject preparations share one SLURM job (group prepare), as do hierarchy and report (group summary)
    n_models, n_datasets = len(cfg["models"]), len(cfg["datasets"])
    assert len(submitted) == 2 * n_models * n_datasets + 2, output[-4000:]
    ran = {d.name for d in logs.iterdir()}
    assert {"rule_extract_features", "rule_encode_fmri", "rule_encode_meg"} <= ran, ran
    assert not any("train_demo_model" in d or "simulate" in d for d in ran), "the copied inputs are reused"
    for key in ("scores", "best_layers"):
        slurm = pd.read_csv(tmp / "results" / "hierarchy" / f"{key}.csv")
        local_rows = pd.read_csv(local / "results" / "hierarchy" / f"{key}.csv")
        assert_same_rows(local_rows[local_rows.dataset.isin(cfg["datasets"])], slurm, f"{key}.csv")
    assert sorted(p.name for p in (tmp / "results" / "figures").glob("*.png"))


# --------------------------------------------------------------------- last: it changes the small study's files
@pytest.mark.slow
def test_until_encode_meg_runs_only_the_missing_encoding(small_study):
    """With one MEG encoding and the hierarchy tables deleted, --until encode_meg re-runs that encoding alone and
    leaves the tables missing; the next full run then makes exactly the hierarchy and the figures.
    """
    tmp, configfile = small_study
    results = tmp / "results"
    part = Path("sim_backprop_meg") / "demo_vit"
    redone = {
        results / "encoding" / part / "sub-1.zarr",
        results / "logs" / "encode_meg" / part / "sub-1.log",
        results / "benchmarks" / "encode_meg" / part / "sub-1.tsv",
        results / "hierarchy",
    }
    before = {
        p: p.stat().st_mtime_ns
        for p in results.rglob("*")
        if p.is_file() and not any(p == r or r in p.parents for r in redone)
    }
    shutil.rmtree(results / "encoding" / part / "sub-1.zarr")
    shutil.rmtree(results / "hierarchy")
    proc = run_snakemake(configfile, "--until", "encode_meg")
    ran = re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M)
    assert ran == ["encode_meg"], ran
    assert (results / "encoding" / part / "sub-1.zarr" / "zarr.json").is_file()
    assert not list(results.glob("hierarchy/*.csv")), "--until encode_meg went on to the hierarchy"
    touched = sorted(str(p.relative_to(results)) for p, t in before.items() if p.stat().st_mtime_ns != t)
    assert not touched, f"--until encode_meg changed other outputs: {touched[:10]}"
    proc = run_snakemake(configfile)
    assert sorted(re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M)) == [
        "all",
        "hierarchy",
        "report",
    ]
