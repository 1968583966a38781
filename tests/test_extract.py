"""Batched extraction equals one-image extraction, for every objective and model family; eval mode holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradbrain import extract, objectives
from gradbrain.catalogue import model_spec
from gradbrain.models import load_model

SMALL = {  # small random-init stand-ins of each family, built offline
    "vit": {"catalogue": "demo_vit", "weights": {"demo": False}},
    "dinov3_rope": {
        "catalogue": "dinov3_vitl16",
        "arch": "vit_small_patch16_dinov3",
        "kwargs": {"img_size": 32, "depth": 3, "embed_dim": 64, "num_heads": 2},
        "input_size": 32,
        "weights": {"hub": None},
    },
    "resnet": {"catalogue": "demo_cnn", "weights": {"demo": False}, "input_size": 32},
    "convnext": {
        "catalogue": "convnext_large",
        "arch": "convnext_atto",
        "n_blocks": 12,
        "input_size": 32,
        "weights": {"hub": None},
    },
    "clip": {"catalogue": "owlvit_b32", "weights": {"file": None}, "n_layers": 4},
}


def _model(family: str, objective: str | None = None):
    overrides = dict(SMALL[family])
    if objective:
        overrides["objective"] = objective
    torch.manual_seed(0)
    return load_model(model_spec(family, overrides))


def _compare(model, objective, n=5):
    gen = torch.Generator().manual_seed(1)
    size = model.preprocessing.input_size
    x = torch.randn(n, 3, size, size, generator=gen, dtype=torch.float64)
    model.module.double()
    capture = extract.Capture(model.sampled_blocks)
    try:
        acts, grads = extract.extract_batch(model, objective, x, torch.arange(n), capture)
        for i in range(n):
            a1, g1 = extract.extract_batch(model, objective, x[i : i + 1], torch.tensor([i]), capture)
            for full, one in zip(acts + grads, a1 + g1):
                torch.testing.assert_close(full[i : i + 1].double(), one.double(), rtol=1e-5, atol=1e-8)
    finally:
        capture.remove()
    assert not model.module.training
    assert all(float(g.abs().sum()) > 0 for g in grads), "every sampled layer gets a gradient"
    return acts, grads


@pytest.mark.parametrize("family", ["vit", "dinov3_rope", "resnet", "convnext"])
@pytest.mark.parametrize("objective", ["ce_pseudo", "ssl_view"])
def test_batched_equals_one_image(family, objective):
    model = _model(family, objective)
    if objective == "ce_pseudo" and family == "dinov3_rope":
        pytest.skip("the DINOv3 stand-in is headless (num_classes=0): ce_pseudo needs a classifier")
    _compare(model, objectives.make_objective(model, seed=3))


@pytest.mark.parametrize("objective", ["clip_zeroshot", "siglip_zeroshot"])
def test_zero_shot_batched_equals_one_image(objective):
    model = _model("clip", objective)
    obj = objectives.make_objective(model, names=["dog", "coat rack", "banana"])
    _compare(model, obj, n=3)


def test_gradients_equal_autograd_of_one_image_loss():
    """The gradient stored for image i is dL_i/dh_l: check against a direct computation for the last layer."""
    model = _model("resnet", "ce_pseudo")
    model.module.double()
    obj = objectives.make_objective(model)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    capture = extract.Capture(model.sampled_blocks)
    _, grads = extract.extract_batch(model, obj, x, torch.arange(3), capture)
    capture.remove()
    h = model.module.forward_features(x[1:2]).detach().requires_grad_(True)
    logits = model.module.forward_head(h)
    loss = torch.nn.functional.cross_entropy(logits, logits.argmax(1))
    (g,) = torch.autograd.grad(loss, h)
    torch.testing.assert_close(grads[-1][1], g.mean(dim=(2, 3))[0], rtol=1e-6, atol=1e-8)


def test_ssl_view_is_seeded_per_image():
    x = torch.rand(3, 16, 16)
    assert torch.equal(objectives.seeded_view(x, 7), objectives.seeded_view(x, 7))
    assert not torch.equal(objectives.seeded_view(x, 7), objectives.seeded_view(x, 8))


def test_pooling_modes():
    h = torch.arange(24.0).view(1, 4, 6)
    assert torch.equal(extract.pool(h, "cls"), h[:, 0])
    assert torch.equal(extract.pool(h, "mean"), h.mean(1))
    assert extract.pool(h, "both").shape == (1, 12)
    with pytest.raises(ValueError, match="needs tokens"):
        extract.pool(torch.zeros(1, 2, 3, 3), "cls")


def _reader(images):
    return lambda ids: images[[int(i) for i in ids]]


def test_zarr_resume_gives_identical_arrays(tmp_path, monkeypatch):
    model = _model("resnet", "ce_pseudo")
    obj = objectives.make_objective(model)
    images = np.random.default_rng(0).integers(0, 255, size=(20, 40, 40, 3), dtype=np.uint8)
    ids = [str(i) for i in range(20)]
    kw = dict(batch_size=4, chunk_images=8)
    full = extract.extract_to_zarr(model, obj, _reader(images), ids, tmp_path / "full.zarr", **kw)

    calls = {"n": 0}
    real = extract.extract_batch

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # dies inside the second chunk, after one complete chunk
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(extract, "extract_batch", dying)
    out = tmp_path / "resumed.zarr"
    with pytest.raises(KeyboardInterrupt):
        extract.extract_to_zarr(model, obj, _reader(images), ids, out, **kw)
    assert not out.exists() and (tmp_path / "resumed.zarr.partial").exists()
    import zarr

    assert zarr.open_group(str(tmp_path / "resumed.zarr.partial")).attrs["n_done"] == 8
    monkeypatch.setattr(extract, "extract_batch", real)
    seen = []
    extract.extract_to_zarr(model, obj, _reader(images), ids, out, progress=lambda d, n: seen.append(d), **kw)
    assert seen[0] == 12, "resumed after the complete chunk"
    for kind in extract.KINDS:
        a = extract.load_features(full, kind)
        b = extract.load_features(out, kind)
        for layer in a:
            np.testing.assert_array_equal(a[layer], b[layer])
