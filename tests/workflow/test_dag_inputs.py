"""What the DAG must see before any job runs (issue 24): a replaced weights file re-runs exactly the jobs that read
it; a configured dataset whose files are missing, a subject out of range or too few simulated images stop the run
with an error naming the file or key, and leave the finished results as they were.

The data roots are trees of empty files at the paths the loaders read (nothing reads them in a dry run or before the
DAG is built) and the finished outputs are empty stand-ins with increasing time stamps, as a finished run leaves.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from helpers.snakerun import run_snakemake

from gradbrain.data.download import files as dl
from gradbrain.data.things_meg.layout import epochs_path

ROIS = {"prf-visualrois": ["V1"]}
HIERARCHY = ("scores", "tests", "verdicts", "profiles", "latencies", "best_layers", "topographies", "claims",
             "partition")  # fmt: skip


def nsd_entry(root: Path, subjects: list[int]) -> dict:
    return {"modality": "fmri", "format": "nsd", "root": str(root), "subjects": subjects, "sessions": 1, "rois": ROIS}


def meg_entry(root: Path, images: Path, subjects: list[int]) -> dict:
    return {"modality": "meg", "format": "things_meg", "root": str(root), "images_root": str(images),
            "subjects": subjects}  # fmt: skip


def build_nsd(root: Path, subjects: list[int]) -> None:
    """Empty files at every path the NSD loaders read for ``subjects`` (one session each)."""
    resolved = {
        **nsd_entry(root, subjects),
        "sessions": {s: 1 for s in subjects},
        "beta_format": "nii.gz",
        "space": "func1pt8mm",
        "beta_version": "betas_fithrf_GLMdenoise_RR",
    }
    for path in dl.local_files(resolved) + [f for s in subjects for f in dl.local_files(resolved, s)]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()


def build_meg(root: Path, images: Path, subjects: list[int]) -> None:
    for s in subjects:
        epochs_path(root, s).parent.mkdir(parents=True, exist_ok=True)
        epochs_path(root, s).touch()
    (images / "object_images" / "aardvark").mkdir(parents=True)
    (images / "object_images" / "aardvark" / "aardvark_01b.jpg").touch()


def write_config(tmp: Path, datasets: dict, **extra) -> Path:
    weights = tmp / "demo_cnn.pt"
    weights.touch()
    cfg = {
        "results": str(tmp / "results"),
        "models": {"demo_cnn": {"weights": {"demo": False, "file": str(weights)}, "n_layers": 4}},
        "datasets": datasets,
        **extra,
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def finished(tmp: Path, datasets: dict, models=("demo_cnn",)) -> list[Path]:
    """Stand-ins of every output of a finished run, each newer than what it was made from."""
    results = tmp / "results"
    outputs = []
    for name, ds in datasets.items():
        outputs += [results / "brain" / name / f"sub-{s}.zarr" for s in ds["subjects"]]
        outputs += [results / "features" / name / f"{m}.zarr" for m in models]
    for name, ds in datasets.items():
        outputs += [results / "encoding" / name / m / f"sub-{s}.zarr" for m in models for s in ds["subjects"]]
    outputs += [results / "hierarchy" / f"{t}.csv" for t in HIERARCHY]
    outputs += [results / "figures", results / "report"]
    stamp = Path(tmp / "config.yaml").stat().st_mtime_ns + 10**9
    for k, path in enumerate(outputs):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".csv":
            path.write_text(f"{path.stem}\nfinished\n")
        else:
            path.mkdir()
        os.utime(path, ns=(stamp + k * 10**7, stamp + k * 10**7))
    return outputs


def planned(proc) -> list[str]:
    """``rule wildcard=value ...`` of every job in a dry run's output, sorted."""
    jobs = []
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n)*)", proc.stdout, flags=re.M):
        wildcards = re.search(r"wildcards: (.*)", body)
        jobs.append(f"{rule} {wildcards.group(1)}" if wildcards else rule)
    return sorted(jobs)


def dry_run(config: Path, *args: str):
    return run_snakemake(config, "--replace-workflow-config", "-n", *args, check=False)


def test_a_replaced_weights_file_reruns_exactly_the_jobs_that_read_it(tmp_path):
    datasets = {"nsd": nsd_entry(tmp_path / "nsd", [1])}
    build_nsd(tmp_path / "nsd", [1])
    config = write_config(tmp_path, datasets)
    finished(tmp_path, datasets)
    proc = dry_run(config)
    assert proc.returncode == 0 and planned(proc) == [], proc.stdout[-2000:] + proc.stderr[-2000:]
    weights = tmp_path / "demo_cnn.pt"
    weights.with_name("new.pt").write_bytes(b"other weights")
    os.replace(weights.with_name("new.pt"), weights)  # a new file at the same path
    proc = dry_run(config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert planned(proc) == [
        "all",
        "encode_fmri dataset=nsd, model=demo_cnn, subject=1",
        "extract_features dataset=nsd, model=demo_cnn",
        "hierarchy",
        "report",
    ]


def test_a_missing_weights_file_is_named_with_its_key(tmp_path):
    datasets = {"nsd": nsd_entry(tmp_path / "nsd", [1])}
    build_nsd(tmp_path / "nsd", [1])
    config = write_config(tmp_path, datasets)
    (tmp_path / "demo_cnn.pt").unlink()
    proc = dry_run(config)
    assert proc.returncode != 0
    assert f"models.demo_cnn.weights.file: {tmp_path / 'demo_cnn.pt'} does not exist" in proc.stdout + proc.stderr


def test_a_dataset_with_a_missing_file_stops_the_run_and_keeps_the_results(tmp_path):
    """P2's epochs are missing: before, the default target left the dataset out ("Nothing to be done") and the
    pending update of the hierarchy tables was dropped with it."""
    root, images = tmp_path / "ds004212", tmp_path / "things-images"
    build_meg(root, images, [1])
    datasets = {"things_meg": meg_entry(root, images, [1, 2])}
    config = write_config(tmp_path, datasets)
    outputs = finished(tmp_path, {"things_meg": meg_entry(root, images, [1])})
    proc = run_snakemake(config, "--replace-workflow-config", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert f"datasets.things_meg: {epochs_path(root, 2)} is missing (subject 2)" in out
    assert "download: true" in out and "datasets.things_meg.subjects" in out
    assert all(p.exists() for p in outputs)
    assert (tmp_path / "results" / "hierarchy" / "scores.csv").read_text() == "scores\nfinished\n"


def test_the_default_target_names_every_configured_encoding(tmp_path):
    """A lost encoding store is made again although the tables that summarise it are still there."""
    datasets = {"nsd": nsd_entry(tmp_path / "nsd", [1, 2])}
    build_nsd(tmp_path / "nsd", [1, 2])
    config = write_config(tmp_path, datasets)
    finished(tmp_path, datasets)
    (tmp_path / "results" / "encoding" / "nsd" / "demo_cnn" / "sub-2.zarr").rmdir()
    proc = dry_run(config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert planned(proc) == ["all", "encode_fmri dataset=nsd, model=demo_cnn, subject=2", "hierarchy", "report"]


def test_a_subject_out_of_range_stops_the_run_before_any_job(tmp_path):
    """NSD has subjects 1..8: before, subject 9 started the hierarchy job without the dataset's jobs, which failed
    and deleted the finished tables."""
    build_nsd(tmp_path / "nsd", [1])
    datasets = {"nsd": nsd_entry(tmp_path / "nsd", [1])}
    config = write_config(tmp_path, {"nsd": nsd_entry(tmp_path / "nsd", [1, 9])})
    outputs = finished(tmp_path, datasets)
    proc = run_snakemake(config, "--replace-workflow-config", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "datasets.nsd.subjects: NSD subjects are 1..8, got 9" in out
    assert all(p.exists() for p in outputs)
    assert (tmp_path / "results" / "hierarchy" / "tests.csv").read_text() == "tests\nfinished\n"


def test_a_things_meg_participant_out_of_range_is_named(tmp_path):
    root, images = tmp_path / "ds004212", tmp_path / "things-images"
    build_meg(root, images, [1])
    proc = dry_run(write_config(tmp_path, {"meg": meg_entry(root, images, [1, 5])}))
    assert proc.returncode != 0
    assert "datasets.meg.subjects: THINGS-MEG participants are 1..4, got 5" in proc.stdout + proc.stderr


def test_a_simulated_subject_beyond_the_simulated_study_is_named(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"results": str(tmp_path / "results")}))
    proc = run_snakemake(config, "-n", "--config", "datasets={sim_backprop_meg: {subjects: [1, 3]}}", check=False)
    assert proc.returncode != 0
    assert (
        "datasets.sim_backprop_meg.subjects: the simulated study has subjects 1..2 (simulation.meg.n_subjects), got 3"
        in proc.stdout + proc.stderr
    )


def test_too_few_simulated_images_for_the_folds_stop_the_dry_run(tmp_path):
    """Before: the dry run passed and the encoding failed minutes later with "need 2 <= k <= n, got k=5, n=4"."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"results": str(tmp_path / "results")}))
    proc = run_snakemake(config, "-n", "--config", "simulation={fmri: {n_images: 4}}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "simulation.fmri.n_images" in out and "encoding.folds (5)" in out, out[-2000:]
