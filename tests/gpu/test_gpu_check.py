"""The GPU check's own parts, on the CPU (no marker): the scores comparison, the RESULTS.md section and its
projection, the readers of pytest's and Snakemake's output, the exit without CUDA, and (slow) the smoke run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import REPO


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare_scores, gpu_check, gpu_report = _module("compare_scores"), _module("gpu_check"), _module("gpu_report")


def _scores() -> pd.DataFrame:
    values = [("activations", "spatial_score", 0.8), ("gradients", "spatial_score", 0.7),
              ("activations", "temporal_score", 0.9), ("gradients", "temporal_score", np.nan),
              ("gradients", "n_significant", 448.0)]  # fmt: skip
    rows = [("sim_fmri", "demo_vit", 1, kind, metric, value) for kind, metric, value in values]
    return pd.DataFrame(rows, columns=compare_scores.KEYS + ["value"])


def _verdicts(scores: pd.DataFrame) -> pd.DataFrame:
    v = scores.assign(scenario="backprop", expected=">= 0.5", recovered=scores.value >= 0.5)
    return v[compare_scores.VERDICT_KEYS + ["expected", "value", "recovered"]]


def test_compare_scores_reports_the_largest_difference_per_metric_and_the_verdicts():
    a = _scores()
    b = a.copy()
    b.loc[1, "value"], b.loc[4, "value"] = 0.72, 460.0  # a count is held to the tolerance relative to it
    same = compare_scores.compare(a, b, _verdicts(a.iloc[:4]), _verdicts(b.iloc[:4]), tolerance=0.05)
    assert same["agree"] and same["rows"] == 5 and same["metrics"]["n_significant"]["max_abs_diff"] == 12
    assert same["metrics"]["spatial_score"]["max_abs_diff"] == pytest.approx(0.02)
    assert same["metrics"]["spatial_score"]["worst"]["kind"] == "gradients"
    assert same["metrics"]["temporal_score"]["max_abs_diff"] == 0, "NaN in both runs is equal"
    assert same["verdicts"] == {"total": 4, "agree": 4, "recovered_a": 3, "recovered_b": 3, "differ": []}

    b.loc[1, "value"] = 0.3  # beyond the tolerance, and the planted organisation is no longer recovered
    moved = compare_scores.compare(a, b, _verdicts(a.iloc[:4]), _verdicts(b.iloc[:4]), tolerance=0.05)
    assert not moved["agree"] and moved["metrics"]["spatial_score"]["rows_over_tolerance"] == 1
    assert [d["kind"] for d in moved["verdicts"]["differ"]] == ["gradients"]
    b.loc[1, "value"], b.loc[3, "value"] = 0.7, 0.1
    assert compare_scores.compare(a, b, None, None, 0.05)["max_abs_diff"] == np.inf, "NaN in one run only"
    b.loc[3, "value"], b.loc[4, "value"] = np.nan, 480.0
    assert compare_scores.compare(a, b, None, None, 0.05)["metrics"]["n_significant"]["rows_over_tolerance"] == 1
    missing = compare_scores.compare(a, a.iloc[:4], None, None, 0.05)
    assert missing["rows_only_in_a"] == 1 and not missing["agree"]


def test_compare_scores_command_line(tmp_path, capsys):
    for name, shift in (("cpu", 0.0), ("cuda", 0.001), ("off", 0.2)):
        (tmp_path / name).mkdir()
        scores = _scores().assign(value=lambda d, s=shift: d.value + s)
        scores.to_csv(tmp_path / name / "scores.csv", index=False)
        _verdicts(scores).to_csv(tmp_path / name / "verdicts.csv", index=False)
    out = tmp_path / "cmp.json"
    assert compare_scores.main([str(tmp_path / "cpu"), str(tmp_path / "cuda" / "scores.csv"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["agree"] and "AGREE" in capsys.readouterr().out
    assert compare_scores.main([str(tmp_path / "cpu"), str(tmp_path / "off"), "--tolerance", "0.1"]) == 1


def test_projection_is_the_documented_formula():
    """images x F_m / (R x F_ref) for extraction, subjects x kinds x layers x h x T x (n w t) / (n_b w_b t_b) for the
    fits, by hand for a study of one model twice the benchmark's FLOPs, one dataset of one subject."""
    ref = gpu_report.jobsize.model_cost(gpu_report.model_spec("bench", gpu_report.BENCH_MODEL))[1]
    dataset = {"modality": "meg", "subjects": {1: 200}, "images": 1000, "targets": 50, "heldout": 1.2}
    sizes = {"kinds": 2, "models": {"m": {"layers": 3, "width": 20, "flops": 2 * ref}}, "datasets": {"d": dataset}}
    fits = {"fmri": {"n": 100, "p": 10, "t": 50, "seconds": 99.0}, "meg": {"n": 100, "p": 10, "t": 25, "seconds": 3.0}}
    p = gpu_report.project(sizes, images_per_s=100.0, fits=fits)
    extraction = 1000 * 2 / 100  # 20 s
    encoding = 2 * 3 * 1.2 * 3.0 * (200 * 20 * 50) / (100 * 10 * 25)  # 345.6 s
    assert p["extraction_s"] == pytest.approx(extraction) and p["encoding_s"] == pytest.approx(encoding)
    assert p["fits"] == 6 and p["gpu_hours"] == pytest.approx((extraction + encoding) / 3600)
    joint = {"n": 100, "layers": 6, "p": 10, "t": 25, "seconds": 4.0}
    with_partition = gpu_report.project(sizes, images_per_s=100.0, fits=fits, joint=joint)
    partition = (2 - 1) * 4.0 * (200 * 3 * 20 * 50) / (100 * 6 * 10 * 25)  # 32 s
    assert with_partition["partition_s"] == pytest.approx(partition)
    assert with_partition["gpu_hours"] == pytest.approx((extraction + encoding + partition) / 3600)


def test_paper_study_sizes():
    sizes = gpu_report.study_sizes(REPO / "config" / "paper.yaml")
    assert len(sizes["models"]) == 9 and sizes["kinds"] == 2
    nsd, meg = sizes["datasets"]["nsd"], sizes["datasets"]["things_meg"]
    assert len(nsd["subjects"]) == 8 and len(meg["subjects"]) == 4
    # 281 samples at 200 Hz resampled to 30 Hz: 42 samples from -0.1 s, all inside the config's -0.1..1.3 s
    assert meg["targets"] == 271 * 42
    assert all(0 < m["layers"] <= 22 for m in sizes["models"].values())


def _results(tmp_path):
    """What a CUDA run of gpu_check writes, reduced to the keys the section reads."""
    summary = {
        "started": "2026-12-03T10:00:00+00:00", "smoke": False,
        "environment": {"device": "NVIDIA H200", "cpu_count": 16, "torch": "2.11.0", "cuda": "13.0"},
        "steps": {"pytest": {"status": "failed", "seconds": 80.0}, "decode": {"status": "skipped", "reason": "time"}},
        "pytest": {"passed": 20, "failed": 1, "error": 0, "skipped": 0,
                   "tests": [{"test": "t::oom", "outcome": "failed", "message": "OutOfMemoryError", "seconds": 1.0}]},
        "workflow": {"rows": 4, "tolerance": 0.05, "agree": True, "metrics": {"spatial_score": {
            "rows": 4, "max_abs_diff": 0.003, "median_abs_diff": 0.0}},
            "verdicts": {"total": 32, "agree": 32, "recovered_a": 32, "recovered_b": 32, "differ": []}},
    }  # fmt: skip
    files = {
        "summary": summary,
        "extract": {"arch": "vit_large_patch16_dinov3", "size": 224, "blocks": 24, "autocast": "bfloat16",
                    "objective": "ssl_view", "batch": 256, "batched_images_per_s": 1700.0, "compiled": "skipped",
                    "roofline_share": 0.53, "nsd_73k_seconds": 42.9, "max_relative_error_vs_fp32": 0.004},
        "encode": {"config": {"n": 9000, "p": 1024, "t": 15000, "folds": 5, "alphas": 10, "device": "cuda"},
                   "seconds": {"gradbrain_torch_cuda": 0.45, "sklearn_RidgeCV": 30.0},
                   "speedup_vs_sklearn": {"gradbrain_torch_cuda": 66.7}},
        "encode_meg": {"config": {"n": 22248, "p": 1024, "t": 76151, "device": "cuda"},
                       "seconds": {"gradbrain_torch_cuda": 6.0}},
        "joint": {"device": "cuda", "sizes": {"n": 22248, "targets": 11653, "layers": 24, "features": 1024,
                                              "control_components": 32, "folds": 5, "alphas": 10},
                  "full": {"seconds": {"control_space": 3.0, "control_fit": 2.0, "f_tests": 20.0,
                                       "joint_fit_total": 40.0}, "peak_gpu_gb": 12.5},
                  "check": {"n": 3000, "targets": 400, "layers": 4, "r2_joint_max_abs": 2e-6, "r_joint_max_abs": 0.01,
                            "f_p_log10_max_abs": 0.0, "layer_p_log10_max_abs": 0.0,
                            "same_significant_layers": True}},
    }  # fmt: skip
    summary["results"] = {k: v for k, v in files.items() if k != "summary"}  # as gpu_check.py writes them
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return files


def test_results_section_names_card_date_figures_and_targets(tmp_path):
    files = _results(tmp_path)
    text = gpu_report.section(gpu_report.load(tmp_path), REPO / "config" / "paper.yaml")
    assert text.startswith("## 2026-12-03, GPU check on NVIDIA H200")
    assert "20 passed, 1 failed" in text and "`t::oom`: OutOfMemoryError" in text
    assert "verdicts agree: 32 of 32" in text and "| spatial_score | 4 | 0.003 |" in text
    assert "Target >= 1,600 images/s: met (1,700)" in text and "Target <= 0.5 s: met (0.45 s)" in text
    assert "| decode | skipped | - | time |" in text and "compiled blocks (" not in text
    fits = {k: gpu_report._fit_benchmark(files[f]) for k, f in (("fmri", "encode"), ("meg", "encode_meg"))}
    hours = gpu_report.project(gpu_report.study_sizes(REPO / "config" / "paper.yaml"), 1700.0, fits)["gpu_hours"]
    assert f"| {hours:.2f} |" not in text, "the partition's hours are part of the projection"
    joint = gpu_report._joint_benchmark(files["joint"])
    assert joint == {"n": 22248, "layers": 24, "p": 1024, "t": 11653, "seconds": 45.0}
    hours = gpu_report.project(gpu_report.study_sizes(REPO / "config" / "paper.yaml"), 1700.0, fits, joint)
    assert f"| {hours['partition_s'] / 3600:.3f} | {hours['gpu_hours']:.2f} |" in text
    assert "peak GPU memory 12.5 GB" in text and "joint R^2 max abs diff 2e-06" in text
    second = tmp_path / "second"  # a second call, for a step the first skipped
    second.mkdir()
    (second / "summary.json").write_text(json.dumps({"started": "2026-12-03T10:09:00+00:00", "steps": {
        "decode": {"status": "ok", "seconds": 40.0}}}))  # fmt: skip
    (second / "decode.json").write_text(json.dumps({"n_images": 2048, "batch": 16, "images_per_s": {"x": 900.0}}))
    merged = gpu_report.section(gpu_report.load(tmp_path, second), REPO / "config" / "paper.yaml")
    assert "| decode | ok | 40 |" in merged and "| pytest | failed | 80 |" in merged and "| x | 900 |" in merged
    assert merged.startswith("## 2026-12-03, GPU check on NVIDIA H200") and "20 passed, 1 failed" in merged
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Benchmark results\n")
    gpu_report.main([str(tmp_path), "--append", str(results_md)])
    assert results_md.read_text().startswith("# Benchmark results\n\n## 2026-12-03, GPU check on NVIDIA H200")


def test_readers_of_pytest_and_snakemake_output(tmp_path):
    (tmp_path / "junit.xml").write_text(
        '<testsuites><testsuite><testcase classname="a" name="ok" time="1.5"/>'
        '<testcase classname="a" name="bad" time="2"><failure message="assert 0.2 &lt;= 1e-4">x</failure></testcase>'
        '<testcase classname="a" name="skip"><skipped message="needs a CUDA device"/></testcase>'
        "</testsuite></testsuites>"
    )
    report = gpu_check.junit(tmp_path / "junit.xml")
    assert (report["passed"], report["failed"], report["skipped"]) == (1, 1, 1)
    assert report["tests"][1] == {
        "test": "a::bad",
        "outcome": "failed",
        "seconds": 2.0,
        "message": "assert 0.2 <= 1e-4",
    }
    (tmp_path / "snake.log").write_text(
        "Job stats:\njob                 count\n------------------  -------\nencode_fmri             8\n"
        "extract_features        8\nhierarchy               1\ntotal                  17\n\nSelect jobs to execute...\n"
    )
    assert gpu_check.job_counts(tmp_path / "snake.log") == {"encode_fmri": 8, "extract_features": 8, "hierarchy": 1}


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the whole check")
def test_gpu_check_without_cuda_says_so_and_exits_0(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "no CUDA device here" in proc.stdout
    assert "no CUDA device here" in (tmp_path / "gpu_check.log").read_text()


@pytest.mark.slow
def test_smoke_run_of_the_benchmark_steps_feeds_the_report(tmp_path):
    """The check's benchmark steps at tiny sizes on the CPU (the pytest and workflow steps take longer: their smoke
    run is ``bash benchmarks/gpu_check.sh --smoke``), then the RESULTS.md section of what they wrote."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'workflow'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out), "--work",
           str(tmp_path / "work"), "--steps", "extract,joint,encode,encode_meg,decode,encode_scale"]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=REPO)
    summary = json.loads((out / "summary.json").read_text())
    steps = ["extract", "joint", "encode", "encode_meg", "decode", "encode_scale"]
    assert {k: v["status"] for k, v in summary["steps"].items()} == dict.fromkeys(steps, "ok")
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"], "the benchmarks' JSON is in the summary"
    assert all(rate > 0 for rate in summary["results"]["decode"]["images_per_s"].values())
    assert summary["results"]["joint"]["check"]["same_significant_layers"]
    text = gpu_report.section(gpu_report.load(out), REPO / "config" / "paper.yaml")
    assert "smoke run on the CPU" in text and "### Projection of `config/paper.yaml`" in text
    assert "### The partition at one THINGS-MEG subject's size" in text
