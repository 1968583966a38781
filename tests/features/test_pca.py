"""Randomized PCA of features equals exact PCA on low-rank data, and the extraction writes it per kind and layer."""

from __future__ import annotations

import numpy as np
import torch
from helpers.models import read_features
from sklearn.decomposition import PCA

from gradbrain import store
from gradbrain.features import extract, objectives, pca
from gradbrain.features.kinds import BASE_KINDS
from gradbrain.models.catalogue import model_spec
from gradbrain.models.load import load_model


def _low_rank(n=300, d=80, rank=6, noise=1e-3, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10, 1, rank)
    x = (rng.standard_normal((n, rank)) * scales) @ np.linalg.qr(rng.standard_normal((d, rank)))[0].T
    return x + noise * rng.standard_normal((n, d)) + rng.standard_normal(d)


def test_randomized_pca_equals_sklearn_exact_pca():
    x = _low_rank()
    fit = pca.randomized_pca(torch.from_numpy(x), 6)
    ref = PCA(6, svd_solver="full").fit(x)
    np.testing.assert_allclose(fit.components.numpy(), ref.components_, atol=1e-8)
    np.testing.assert_allclose(fit.explained_variance.numpy(), ref.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(fit.explained_variance_ratio.numpy(), ref.explained_variance_ratio_, rtol=1e-8)
    np.testing.assert_allclose(fit.scores.numpy(), ref.transform(x), atol=1e-8)
    np.testing.assert_allclose(fit.mean.numpy(), ref.mean_, atol=1e-12)


def test_randomized_pca_spans_the_exact_leading_subspace():
    """With noise of the same order as the weakest direction, the span still matches the exact SVD's."""
    x = _low_rank(n=500, d=120, rank=8, noise=0.05, seed=1)
    k = 8
    fit = pca.randomized_pca(torch.from_numpy(x), k)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    exact = vt[:k].T @ vt[:k]
    approx = fit.components.numpy().T @ fit.components.numpy()
    assert np.linalg.norm(exact - approx, 2) < 1e-6
    np.testing.assert_allclose(fit.components.numpy() @ fit.components.numpy().T, np.eye(k), atol=1e-12)


def test_pca_caps_components_at_the_rank_limit():
    fit = pca.randomized_pca(torch.randn(10, 4, dtype=torch.float64), 50)
    assert fit.components.shape == (4, 4) and fit.scores.shape == (10, 4)
    np.testing.assert_allclose(float(fit.explained_variance_ratio.sum()), 1.0, rtol=1e-10)


def test_extraction_writes_pca_scores_per_kind_and_layer(tmp_path):
    torch.manual_seed(0)
    model = load_model(model_spec("cnn", {"catalogue": "demo_cnn", "weights": {"demo": False}, "input_size": 32}))
    obj = objectives.make_objective(model)
    images = np.random.default_rng(0).integers(0, 255, size=(24, 40, 40, 3), dtype=np.uint8)
    ids = [f"img{i}" for i in range(24)]
    read = lambda batch: images[[int(i[3:]) for i in batch]]  # noqa: E731
    kw = dict(batch_size=8, chunk_images=8)
    raw = extract.extract_to_zarr(model, obj, read, ids, tmp_path / "raw.zarr", **kw)
    red = extract.extract_to_zarr(model, obj, read, ids, tmp_path / "pca.zarr", pca_components=5, **kw)
    assert not (tmp_path / "pca.zarr.partial").exists() and not (tmp_path / "pca.zarr.pca.partial").exists()
    import zarr

    group = zarr.open_group(str(red), mode="r")
    assert group.attrs["pca_components"] == 5 and group.attrs["layers"] == model.layer_names
    assert store.read_array(group, "stimulus_id").tolist() == ids
    for kind in BASE_KINDS:
        for layer, x in read_features(raw, kind).items():
            scores = read_features(red, kind, layer)
            fit = pca.randomized_pca(torch.from_numpy(x), 5)
            assert scores.shape == (24, 5)
            np.testing.assert_allclose(scores, fit.scores.numpy(), rtol=1e-5, atol=1e-5 * np.abs(scores).max())
            comps = np.asarray(group["pca"][kind][layer]["components"][...])
            mean = np.asarray(group["pca"][kind][layer]["mean"][...])
            np.testing.assert_allclose((x - mean) @ comps.T, scores, rtol=1e-4, atol=1e-4 * np.abs(scores).max())
