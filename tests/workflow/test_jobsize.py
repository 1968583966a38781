"""Job sizes for the cluster (gradbrain.jobsize): they grow with the data, and the MEG time axis is prepare_meg's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from helpers import REPO
from helpers.config import load_config

from gradbrain import jobsize
from gradbrain.data.nsd.paths import COMPLETED_SESSIONS
from gradbrain.data.things_meg.read import time_operator
from gradbrain.models.catalogue import model_spec

ROOT = REPO


def load(name: str) -> dict:
    return load_config(name)


@pytest.fixture(scope="module")
def demo() -> dict:
    return load("config.yaml")


@pytest.fixture(scope="module")
def paper() -> dict:
    cfg = load("paper.yaml")
    for ds in cfg["datasets"].values():  # as common.smk resolves them
        if ds["format"] == "nsd":
            ds["sessions"] = {int(s): COMPLETED_SESSIONS[int(s)] for s in ds["subjects"]}
    cfg["datasets"]["things_meg"]["preprocessing"] = {"sfreq": 30.0, "tmin": -0.1, "tmax": 1.3}
    return cfg


def test_nsd_images_follow_the_sessions():
    nsd = {"modality": "fmri", "format": "nsd", "subjects": [1, 2], "sessions": {1: 40, 2: 20}}
    assert jobsize.images(nsd, {}, 1) == 40 * 750 // 3
    assert jobsize.images(nsd, {}, 2) == 20 * 750 // 3
    # the 1000 shared images count once in the features store of both subjects
    assert jobsize.images(nsd, {}) == 40 * 250 + 20 * 250 - 1000
    full = {**nsd, "subjects": list(range(1, 9)), "sessions": {s: 40 for s in range(1, 9)}}
    assert jobsize.images(full, {}) == 73_000


@pytest.mark.parametrize(
    "preprocessing",
    [
        {},
        {"sfreq": None},
        {"sfreq": 30.0, "tmin": -0.1, "tmax": 1.3},
        {"sfreq": 100.0, "tmax": 0.5},
        {"sfreq": None, "tmin": 0.0, "tmax": 1.0},
        {"tmax": 1.05},
    ],
)
def test_meg_time_points_equal_prepare_megs_operator(preprocessing):
    """The estimate counts the time points that things_meg's own resample-and-crop operator keeps (a missing sfreq
    is the schema's default, 30 Hz)."""
    sfreq, tmin, samples = 200.0, -0.1, 281
    times = tmin + np.arange(samples) / sfreq
    _, kept = time_operator(
        times, sfreq, None, preprocessing.get("sfreq", 30.0), preprocessing.get("tmin"), preprocessing.get("tmax")
    )
    dataset = {"modality": "meg", "format": "things_meg", "preprocessing": preprocessing}
    assert jobsize.meg_times(dataset) == len(kept)
    assert jobsize.targets(dataset, {}) == 271 * len(kept)


def test_things_meg_images_count_the_test_set_only_when_held_out():
    meg = {"modality": "meg", "format": "things_meg", "subjects": [1]}
    assert jobsize.images(meg, {}, 1) == 22_248
    assert jobsize.images({**meg, "heldout": "test"}, {}, 1) == 22_448
    assert jobsize.images(meg, {}) == 22_448, "the features store holds the test images too"


@pytest.mark.parametrize("preprocessing", [{}, {"sfreq": None}, {"sfreq": 50.0, "tmin": 0.0, "tmax": 0.5}])
def test_things_eeg2_sizes_follow_its_release(preprocessing):
    """THINGS-EEG2: 17 channels at 100 Hz from -0.2 s, 16,540 + 200 images, both files in memory when prepared."""
    times = -0.2 + np.arange(100) / 100.0
    _, kept = time_operator(
        times, 100.0, None, preprocessing.get("sfreq", 30.0), preprocessing.get("tmin"), preprocessing.get("tmax")
    )
    eeg = {"modality": "meg", "format": "things_eeg2", "subjects": [1], "preprocessing": preprocessing}
    assert jobsize.meg_times(eeg) == len(kept)
    assert jobsize.targets(eeg, {}) == 17 * len(kept)
    assert jobsize.images(eeg, {}, 1) == 16_540 and jobsize.images({**eeg, "heldout": "test"}, {}, 1) == 16_740
    trials_bytes = (16_540 * 4 + 200 * 80) * 17 * 100 * 8
    assert jobsize.prepare(eeg, 1, {})["mem_mb"] * 2**20 >= 2 * trials_bytes


def test_paper_jobs_are_larger_than_the_demos(demo, paper):
    """NSD and THINGS-MEG with ViT-L ask for more memory and time than the simulated study with the demo models
    (on the same device: the paper's GPU makes its ridge fast)."""
    sim = demo["simulation"]
    demo_ds = copy.deepcopy(demo["datasets"])
    demo_vit, vit_l = model_spec("demo_vit"), model_spec("vit_l16")
    paper_cpu = {**paper["encoding"], "device": "cpu"}
    for modality, real in (("fmri", "nsd"), ("meg", "things_meg")):
        small = demo_ds[f"sim_backprop_{modality}"]
        large = paper["datasets"][real]
        for key in ("mem_mb", "runtime"):
            assert (
                jobsize.encode(large, vit_l, 1, paper_cpu, {})[key]
                > jobsize.encode(small, demo_vit, 1, demo["encoding"], sim)[key]
            )
            assert (
                jobsize.encode(large, vit_l, 1, paper["encoding"], {})[key]
                >= jobsize.encode(small, demo_vit, 1, demo["encoding"], sim)[key]
            )
            assert jobsize.prepare(large, 1, {})[key] > jobsize.prepare(small, 1, sim)[key]
            assert (
                jobsize.extract(large, vit_l, paper["extraction"], {})[key]
                > jobsize.extract(small, demo_vit, demo["extraction"], sim)[key]
            )
    paper_models = {m: model_spec(m, e or {}) for m, e in paper["models"].items()}
    demo_models = {m: model_spec(m, e or {}) for m, e in demo["models"].items()}
    assert (
        jobsize.hierarchy(paper["datasets"], paper_models, paper["hierarchy"], {})["mem_mb"]
        > jobsize.hierarchy(demo_ds, demo_models, demo["hierarchy"], sim)["mem_mb"]
    )


def test_sizes_grow_with_images_targets_and_layers(paper):
    nsd = paper["datasets"]["nsd"]
    spec = model_spec("vit_l16")
    enc = {**paper["encoding"], "device": "cpu"}
    base = jobsize.encode(nsd, spec, 1, enc, {})
    fewer_sessions = jobsize.encode({**nsd, "sessions": {1: 10}}, spec, 1, enc, {})
    finer = jobsize.encode({**nsd, "space": "func1mm"}, spec, 1, enc, {})
    fewer_layers = jobsize.encode(nsd, {**spec, "n_layers": 4}, 1, enc, {})
    assert fewer_sessions["mem_mb"] < base["mem_mb"] and fewer_sessions["runtime"] < base["runtime"]
    assert fewer_layers["mem_mb"] <= base["mem_mb"] and fewer_layers["runtime"] < base["runtime"]
    assert finer["mem_mb"] > base["mem_mb"] and finer["runtime"] > base["runtime"]
    gpu = jobsize.encode(nsd, spec, 1, {**enc, "device": "cuda"}, {})
    assert gpu["runtime"] < base["runtime"], "the same ridge is faster on the GPU"


def test_embedded_default_fits_a_small_node(demo):
    """Every sized job of the embedded default asks for at most 4 GB, so it runs on a laptop-sized SLURM node."""
    sim = demo["simulation"]
    for name, ds in demo["datasets"].items():
        for model, entry in demo["models"].items():
            spec = model_spec(model, entry or {})
            sizes = [
                jobsize.prepare(ds, 1, sim),
                jobsize.extract(ds, spec, demo["extraction"], sim),
                jobsize.encode(ds, spec, 1, demo["encoding"], sim),
            ]
            assert all(s["mem_mb"] <= 4000 and s["runtime"] <= 60 for s in sizes), (name, model, sizes)


def test_paper_meg_subject_at_30_hz_fits_a_16_gb_job(paper):
    """benchmarks/jobsize.py's fit (jobsize.ENCODE_MEMORY): one THINGS-MEG subject at 30 Hz, ViT-L's 24 layers, both
    kinds and the partition, fits 16 GB with the paper's target_batch and cache_gb, and not with the defaults."""
    meg, vit_l = paper["datasets"]["things_meg"], model_spec("vit_l16")
    assert jobsize.targets(meg, {}) >= 271 * 42
    assert jobsize.encode(meg, vit_l, 1, paper["encoding"], {})["mem_mb"] <= 16_000
    defaults = {**paper["encoding"], "target_batch": 20000, "cache_gb": 2.0}
    assert jobsize.encode(meg, vit_l, 1, defaults, {})["mem_mb"] > 16_000
    native = {**meg, "preprocessing": {"sfreq": None, "tmin": -0.1, "tmax": 1.3}}
    assert jobsize.encode(native, vit_l, 1, paper["encoding"], {})["mem_mb"] > 16_000
