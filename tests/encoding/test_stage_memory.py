"""The encoding job's memory does not grow with the number of layers (issue 24, item 10)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import zarr

from gradbrain import store
from gradbrain.encoding.identifiability import linear_cka
from gradbrain.encoding.stage import encode_subject

N, WIDTH, TARGETS = 400, 192, 30


def _stores(root, n_layers: int) -> tuple[str, str]:
    """A features store (activations and gradients, ``n_layers`` layers) and an fMRI brain store, random."""
    rng = np.random.default_rng(0)
    ids = np.array([f"img{i:04d}" for i in range(N)])
    feats = zarr.open_group(str(root / "features.zarr"), mode="w")
    layers = [f"blocks.{k}" for k in range(n_layers)]
    for kind in ("activations", "gradients"):
        for name in layers:
            store.write_array(feats, f"{kind}/{name}", rng.standard_normal((N, WIDTH), dtype=np.float32))
    store.write_array(feats, "stimulus_id", ids)
    feats.attrs.update({"layers": layers, "relative_depths": np.linspace(0, 1, n_layers).tolist(),
                        "kinds": ["activations", "gradients"], "objective": "ce_pseudo", "pooling": "mean",
                        "weights_id": "random"})  # fmt: skip
    brain = zarr.open_group(str(root / "brain.zarr"), mode="w")
    store.write_array(brain, "Y", rng.standard_normal((N, TARGETS), dtype=np.float32))
    store.write_array(brain, "stimulus_id", ids)
    store.write_array(brain, "split", np.where(np.arange(N) < N - 40, "train", "test"))
    brain.attrs["modality"] = "fmri"
    return str(root / "features.zarr"), str(root / "brain.zarr")


def _peak(root, n_layers: int, partition: bool) -> int:
    features, brain = _stores(root, n_layers)
    cfg = {"folds": 3, "seed": 0, "alphas": [1.0, 100.0], "backend": "numpy", "device": "cpu", "dtype": "float32",
           "target_batch": None, "cache_gb": 0.0, "identifiability_targets": 2, "kinds": ["activations", "gradients"],
           "partition": {"enabled": partition, "control_components": 2, "gradient_components": 2,
                         "band_ratios": [1.0]}}  # fmt: skip
    tracemalloc.start()
    encode_subject(features, brain, root / "enc.zarr", cfg)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert zarr.open_group(str(root / "enc.zarr"))["r/gradients"].shape == (n_layers, TARGETS)
    return peak


@pytest.mark.parametrize("partition", [False, True])
def test_encoding_job_holds_one_layer_at_a_time(tmp_path, partition):
    """Tripling the layers (4 -> 12) adds less to the peak allocation than one layer held at once (the job read
    every layer of a kind into memory, its training rows besides, and built an (n, n) Gram per layer for the linear
    CKA). With the partition the control space is what grows: L q columns (q = control_components), so the joint
    fits' designs widen by q per layer; the allowance is that design's growth, (n, 8 L q) float64."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    small, large = _peak(tmp_path / "a", 4, partition), _peak(tmp_path / "b", 12, partition)
    layer = N * WIDTH * 4
    control = N * 8 * 2 * 8 * 8 if partition else 0
    assert large - small < layer + control, (small, large)


def test_linear_cka_in_feature_space_equals_the_gram_form_and_reads_each_reader():
    """CKA from (d, d) products equals <XX', YY'> / (||XX'|| ||YY'||) of the centred layers; readers work."""
    rng = np.random.default_rng(1)
    layers = [rng.standard_normal((50, 7)) @ rng.standard_normal((7, d)) for d in (5, 9, 12)]
    grams = [(x - x.mean(0)) @ (x - x.mean(0)).T for x in layers]
    expected = np.array([[(a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()) for b in grams] for a in grams])
    np.testing.assert_allclose(linear_cka(layers), expected, rtol=1e-12)
    np.testing.assert_allclose(linear_cka([lambda x=x: x for x in layers]), expected, rtol=1e-12)
