"""End to end: a small planted-truth study through the whole DAG, and the Snakemake conventions around it."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


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


def run_snakemake(configfile: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO), "--configfile",
           str(configfile), "--workflow-profile", "none", "--cores", "2", *args]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


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
        sel = scores[(scores.dataset == dataset) & (scores.model == model) & (scores.kind == kind)
                     & (scores.metric == metric)]
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
    assert list(tests.columns) == ["dataset", "model", "kind", "metric", "n_subjects", "mean", "sem", "statistic",
                                   "p", "p_fdr", "layer_identifiability"]
    assert sorted(p.name for p in (tmp / "results" / "figures").glob("*.png"))


ARTEFACTS = REPO / "tests" / "artefacts"


@pytest.mark.slow
def test_report_opens_in_headless_chromium_with_every_image_loaded(small_study):
    """`snakemake --report` of the small study, opened in a real browser; screenshots land in tests/artefacts/."""
    from chromium import check_report, find_chromium

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
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it): the report was "
                    "built but not opened in a browser")
    seen = check_report(binary, report, ARTEFACTS)
    print(f"report screenshots: {', '.join(map(str, seen['screenshots']))}")
    names = {Path(p).name: v for p, v in seen["results"].items()}
    assert set(names) == {*figures, "summary.png", "tests.html", "verdicts.html"}
    for name, view in names.items():
        assert view["width"] > 0 and view["height"] > 0, f"{name} did not render in the report: {view}"
    tests = pd.read_csv(tmp / "results" / "hierarchy" / "tests.csv")
    assert names["tests.html"]["rows"] == len(tests)
    verdicts = pd.read_csv(tmp / "results" / "hierarchy" / "verdicts.csv")
    assert names["verdicts.html"]["rows"] == len(verdicts)
    assert not seen["problems"], "\n".join(seen["problems"])
    assert all(p.stat().st_size > 10_000 for p in seen["screenshots"])


def planned(configfile: Path) -> list[str]:
    """The (rule, wildcards) lines of a dry run."""
    out = run_snakemake(configfile, "-n").stdout
    jobs, rule = [], None
    for line in out.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
            jobs.append(rule)
        elif line.strip().startswith("wildcards:") and rule:
            jobs[-1] = f"{rule} {line.strip()}"
    return jobs


@pytest.mark.slow
def test_rerun_is_a_no_op_and_one_model_edit_reruns_only_that_model(small_study):
    tmp, configfile = small_study
    proc = run_snakemake(configfile, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    cfg = yaml.safe_load(configfile.read_text())
    cfg["models"]["demo_cnn"] = {"batch_size": 37}
    edited = tmp / "edited.yaml"
    edited.write_text(yaml.safe_dump(cfg))
    jobs = planned(edited)
    rules = {j.split()[0] for j in jobs}
    assert {"extract_features", "encode_fmri", "encode_meg", "hierarchy", "report"} <= rules
    assert not rules & {"train_demo_model", "simulate_stimuli", "simulate_study", "prepare_fmri", "prepare_meg"}
    assert not [j for j in jobs if "model=demo_vit" in j], "the other model's outputs are reused"
