"""Pre-downloaded data roots (``download: false``): checked when the DAG is built, their files declared as inputs.

A root that does not exist fails the dry run, naming the config key; a file that is replaced under an existing root
makes Snakemake plan again exactly the jobs that read it (the fixture trees are in the real formats).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from helpers import realdata
from helpers.snakerun import run_snakemake

from gradbrain.data.download import files as dl
from gradbrain.data.nsd.paths import betas_path, expdesign_path, stimuli_path
from gradbrain.data.things_meg.layout import epochs_path

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.set_index")
ROIS = {"prf-visualrois": ["V1", "V2"]}
TRIALS = 30


def _meg(root: Path, images: Path, **keys) -> dict:
    return {"format": "things_meg", "root": str(root), "images_root": str(images), "subjects": [1], **keys}


def test_check_roots_names_each_missing_root(tmp_path):
    (tmp_path / "meg").mkdir()
    nsd = {"format": "nsd", "root": str(tmp_path / "nsd")}
    datasets = {
        "nsd": nsd,
        "meg": _meg(tmp_path / "meg", tmp_path / "images"),
        "fetched": {**nsd, "download": True},
        "sim": {**nsd, "simulated": "backprop"},
    }
    with pytest.raises(FileNotFoundError) as err:
        dl.check_roots(datasets)
    lines = str(err.value).splitlines()
    assert len(lines) == 2, "one line per missing root; roots the workflow fills itself are not checked"
    assert lines[0].startswith(f"datasets.nsd.root: {tmp_path / 'nsd'} does not exist")
    assert "datasets.nsd.download: true and accept_terms: true" in lines[0] and "Fix the path" in lines[0]
    assert lines[1].startswith(f"datasets.meg.images_root: {tmp_path / 'images'} does not exist")
    (tmp_path / "nsd").mkdir()
    (tmp_path / "images").mkdir()
    dl.check_roots(datasets)


@pytest.mark.parametrize("parts", [4, 2])
def test_local_files_are_the_files_present(tmp_path, parts):
    root, images = tmp_path / "ds004212", tmp_path / "things-images"
    tree = realdata.build_things_meg(root, images, parts=parts)
    ds = _meg(root, images)
    first = epochs_path(root, 1)
    splits = [first.with_name(f"preprocessed_P1-epo-{k}.fif") for k in range(1, parts)]
    assert dl.local_files(ds, 1) == [p.as_posix() for p in [first, *splits]] and sorted(tree[1]) == sorted(
        [first, *splits]
    )
    listed = dl.local_files(ds)
    assert listed[:parts] == dl.local_files(ds, 1)
    assert listed[parts:] == [(images / "object_images" / sid).as_posix() for sid in tree["ids"]]
    nsd = {
        "format": "nsd",
        "root": "data/nsd",
        "sessions": {1: 2},
        "rois": ROIS,
        "beta_format": "nii.gz",
        "space": "func1pt8mm",
        "beta_version": "betas_fithrf_GLMdenoise_RR",
    }
    assert dl.local_files(nsd, 1) == dl.download_targets(nsd, 1)
    assert dl.local_files(nsd) == [f"data/nsd/{p.as_posix()}" for p in (expdesign_path("."), stimuli_path("."))]


# ------------------------------------------------------------------------------------------ the workflow (slow)
def _config(tmp: Path, roots: dict[str, Path]) -> Path:
    cfg = {
        "results": str(tmp / "results"),
        "models": {"demo_cnn": {"weights": {"demo": False, "file": str(tmp / "demo_cnn.pt")}, "n_layers": 4}},
        "extraction": {"device": "cpu", "batch_size": 32, "chunk_images": 64},
        "datasets": {
            "nsd": {
                "modality": "fmri",
                "format": "nsd",
                "root": str(roots["nsd"]),
                "subjects": [1, 2],
                "sessions": 2,
                "trials_per_session": TRIALS,
                "rois": ROIS,
            },
            "things_meg": {
                "modality": "meg",
                **_meg(roots["meg"], roots["images"]),
            },
        },
        "hierarchy": {"permutations": 20, "bootstraps": 10},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def planned(proc) -> set[tuple[str, ...]]:
    """(rule, dataset[, subject]) of every job in a dry run's output."""
    jobs = set()
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n)*)", proc.stdout, flags=re.M):
        wildcards = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"wildcards: (.*)", body).group(1)))
        jobs.add((rule, wildcards["dataset"], *([wildcards["subject"]] if "subject" in wildcards else [])))
    return jobs


UNTIL = ("--until", "prepare_fmri", "prepare_meg", "extract_features")


@pytest.mark.slow
def test_missing_root_fails_the_dry_run(tmp_path):
    roots = {"nsd": tmp_path / "no-such-nsd", "meg": tmp_path, "images": tmp_path}
    (tmp_path / "demo_cnn.pt").touch()  # the configured weights file (checked before the roots)
    proc = run_snakemake(_config(tmp_path, roots), "--replace-workflow-config", "-n", check=False)
    assert proc.returncode != 0
    assert f"datasets.nsd.root: {roots['nsd']} does not exist" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_a_replaced_file_reruns_exactly_the_jobs_that_read_it(tmp_path):
    import timm
    import torch

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", num_classes=12).state_dict(), tmp_path / "demo_cnn.pt")
    roots = {"nsd": tmp_path / "nsd", "meg": tmp_path / "ds004212", "images": tmp_path / "things-images"}
    realdata.build_nsd(roots["nsd"], subjects=(1, 2), n_sessions=2, trials=TRIALS)
    tree = realdata.build_things_meg(roots["meg"], roots["images"])
    config = _config(tmp_path, roots)
    run_snakemake(config, "--replace-workflow-config", *UNTIL)
    assert planned(run_snakemake(config, "--replace-workflow-config", "-n", *UNTIL)) == set()

    def plan_after_replacing(path: Path) -> set[tuple[str, ...]]:
        """Jobs planned once ``path`` is replaced by a new file with other bytes (Snakemake ignores a new time
        stamp on a small file whose checksum it recorded unchanged); then the original is put back."""
        original, before = path.read_bytes(), path.stat()
        path.with_name("replacement").write_bytes(original + b"\0")
        os.replace(path.with_name("replacement"), path)
        jobs = planned(run_snakemake(config, "--replace-workflow-config", "-n", *UNTIL))
        path.write_bytes(original)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        return jobs

    nsd = roots["nsd"]
    assert plan_after_replacing(betas_path(nsd, 2, 1)) == {("prepare_fmri", "nsd", "2")}
    assert plan_after_replacing(stimuli_path(nsd)) == {("extract_features", "nsd")}
    assert plan_after_replacing(expdesign_path(nsd)) == {
        ("prepare_fmri", "nsd", "1"),
        ("prepare_fmri", "nsd", "2"),
        ("extract_features", "nsd"),
    }
    split = epochs_path(roots["meg"], 1).with_name("preprocessed_P1-epo-2.fif")
    assert plan_after_replacing(split) == {("prepare_meg", "things_meg", "1"), ("extract_features", "things_meg")}
    image = roots["images"] / "object_images" / tree["ids"][3]
    assert plan_after_replacing(image) == {("extract_features", "things_meg")}
