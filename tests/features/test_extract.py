"""Batched extraction equals one-image extraction, for every objective and model family; eval mode holds."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr
from helpers import REPO
from helpers.models import array_reader, read_features, small_model

from gradbrain import store
from gradbrain.features import extract, objectives, resume
from gradbrain.features.capture import Capture, pool
from gradbrain.features.kinds import BASE_KINDS
from gradbrain.features.objectives import mae
from gradbrain.features.objectives.ssl import seeded_views, view_params
from gradbrain.features.objectives.zeroshot import ZeroShot
from gradbrain.models.catalogue import FAMILY_BLOCKS, load_catalogue, model_spec, n_blocks, sample_layers
from gradbrain.models.model import resolve_blocks, token_layout


def _base_kinds(model, objective, x, index, capture):
    feats = extract.batch_features(model, objective, x, index, capture)
    return feats["activations"], feats["gradients"]


def _compare(model, objective, n=5):
    gen = torch.Generator().manual_seed(1)
    size = model.preprocessing.input_size
    x = torch.randn(n, 3, size, size, generator=gen, dtype=torch.float64)
    model.module.double()
    capture = Capture(model.sampled_blocks)
    try:
        acts, grads = _base_kinds(model, objective, x, torch.arange(n), capture)
        for i in range(n):
            a1, g1 = _base_kinds(model, objective, x[i : i + 1], torch.tensor([i]), capture)
            for full, one in zip(acts + grads, a1 + g1, strict=True):
                torch.testing.assert_close(full[i : i + 1].double(), one.double(), rtol=1e-5, atol=1e-8)
    finally:
        capture.remove()
    assert not any(m.training for m in model.module.modules()), "every submodule stays in eval mode"
    assert all(float(g.abs().sum()) > 0 for g in grads), "every sampled layer gets a gradient"
    return acts, grads


@pytest.mark.parametrize("family", ["vit", "dinov3_rope", "resnet", "convnext"])
@pytest.mark.parametrize("objective", ["ce_pseudo", "ssl_view"])
def test_batched_equals_one_image(family, objective):
    model = small_model(family, objective)
    _compare(model, objectives.make_objective(model, seed=3))


@pytest.mark.parametrize("family", ["clip", "siglip"])
@pytest.mark.parametrize("objective", ["clip_zeroshot", "siglip_zeroshot"])
def test_zero_shot_batched_equals_one_image(family, objective):
    model = small_model(family, objective)
    obj = objectives.make_objective(model, names=["dog", "coat rack", "banana"])
    assert obj.name == objective
    _compare(model, obj, n=3)


def test_ssl_view_on_image_towers():
    model = small_model("siglip", "ssl_view")
    _compare(model, objectives.make_objective(model, seed=1), n=3)


def _mae_decoder_file(model, path, depth=2, dim=32, heads=4):
    """A random-init MAE decoder saved as the original MAE checkpoints store it ({'model': {decoder_*...}})."""
    torch.manual_seed(5)
    vit = model.module
    n = vit.patch_embed.num_patches
    dec = mae.MAEDecoder(vit.embed_dim, dim, depth, heads, n, vit.patch_embed.patch_size[0])
    for prm in dec.parameters():  # non-zero everywhere, so every path carries gradient
        torch.nn.init.normal_(prm, std=0.2)
    state = {**{k: v for k, v in vit.state_dict().items()}, **dec.state_dict()}
    torch.save({"model": state}, path)
    return dec


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_recon_batched_equals_one_image(tmp_path, norm_pix):
    base = small_model("vit", "ce_pseudo")
    _mae_decoder_file(base, tmp_path / "mae.pth")
    model = small_model(
        "vit",
        "mae_recon",
        weights={"demo": False, "file": str(tmp_path / "mae.pth")},
        decoder={"file": str(tmp_path / "mae.pth"), "num_heads": 4, "norm_pix_loss": norm_pix},
    )
    for a, b in zip(model.module.state_dict().values(), base.module.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the encoder came from the same MAE checkpoint
    obj = objectives.make_objective(model, seed=2)
    assert obj.name == "mae_recon" and obj.norm_pix_loss == norm_pix
    obj.decoder.double()
    _compare(model, obj, n=4)


def _mae_reference_loss(vit, decoder, img, noise, mask_ratio, norm_pix):
    """models_mae.py (facebookresearch/mae) written out for one image: forward_encoder, forward_decoder, loss."""
    p = decoder.patch_size
    x = vit.patch_embed(img) + vit.pos_embed[:, 1:]
    n_keep = int(x.shape[1] * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    x = torch.gather(x, 1, ids_shuffle[:, :n_keep, None].repeat(1, 1, x.shape[2]))
    mask = torch.ones(1, noise.shape[1], dtype=img.dtype)
    mask[:, :n_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    x = torch.cat([vit.cls_token + vit.pos_embed[:, :1], x], dim=1)
    for blk in vit.blocks:
        x = blk(x)
    x = vit.norm(x)
    x = decoder.decoder_embed(x)
    tokens = decoder.mask_token.repeat(1, ids_restore.shape[1] + 1 - x.shape[1], 1)
    x_ = torch.cat([x[:, 1:], tokens], dim=1)
    x_ = torch.gather(x_, 1, ids_restore[..., None].repeat(1, 1, x.shape[2]))
    x = torch.cat([x[:, :1], x_], dim=1) + decoder.decoder_pos_embed
    for blk in decoder.decoder_blocks:
        x = blk(x)
    pred = decoder.decoder_pred(decoder.decoder_norm(x))[:, 1:]
    h = w = img.shape[2] // p
    target = img.reshape(1, 3, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(1, h * w, p * p * 3)
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(-1)
    return (loss * mask).sum() / mask.sum()


def test_mae_recon_is_the_mae_loss(tmp_path):
    base = small_model("vit", "ce_pseudo")
    _mae_decoder_file(base, tmp_path / "mae.pth")
    model = small_model(
        "vit",
        "mae_recon",
        weights={"demo": False, "file": str(tmp_path / "mae.pth")},
        decoder={"file": str(tmp_path / "mae.pth"), "num_heads": 4, "mask_ratio": 0.5},
    )
    obj = objectives.make_objective(model, seed=4)
    model.module.double(), obj.decoder.double()
    x = torch.randn(3, 3, 48, 48, dtype=torch.float64)
    losses = obj(model, x, torch.tensor([0, 7, 9]))
    n = model.module.patch_embed.num_patches
    for k, i in enumerate([0, 7, 9]):
        noise = torch.rand(n, generator=torch.Generator().manual_seed(4 * 1_000_003 + i))[None]
        ref = _mae_reference_loss(model.module, obj.decoder, x[k : k + 1], noise, 0.5, True)
        torch.testing.assert_close(losses[k], ref, rtol=1e-10, atol=1e-12)


def test_mae_recon_without_decoder_says_how_to_get_one(tmp_path):
    model = small_model("vit", "mae_recon")
    with pytest.raises(FileNotFoundError, match="decoder.file.*mae_visualize_vit_large.pth"):
        objectives.make_objective(model)
    torch.save({"model": model.module.state_dict()}, tmp_path / "encoder_only.pth")
    model = small_model("vit", "mae_recon", decoder={"file": str(tmp_path / "encoder_only.pth")})
    with pytest.raises(ValueError, match="holds no MAE decoder"):
        objectives.make_objective(model)


def test_text_bank_is_encoded_once_per_dataset(tmp_path, monkeypatch):
    model = small_model("clip", "clip_zeroshot")
    calls = {"n": 0}
    encode_text = model.module.encode_text

    def counting(tokens, *a, **k):
        calls["n"] += 1
        return encode_text(tokens, *a, **k)

    monkeypatch.setattr(model.module, "encode_text", counting)
    names = [f"concept {i}" for i in range(300)]
    obj = objectives.make_objective(model, names=names)
    assert calls["n"] == 2 and obj.text.shape[0] == 300  # 300 names in chunks of 256
    images = np.random.default_rng(0).integers(0, 255, size=(12, 40, 40, 3), dtype=np.uint8)
    out = extract.extract_to_zarr(model, obj, array_reader(images), [str(i) for i in range(12)], tmp_path / "f.zarr",
                                  batch_size=3, chunk_images=6)  # fmt: skip
    assert calls["n"] == 2, "no batch re-encodes the text bank"
    attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    assert attrs["objective"] == "clip_zeroshot" and attrs["objective_settings"]["text_bank_size"] == 300


def test_gradients_equal_autograd_of_one_image_loss():
    """The gradient stored for image i is dL_i/dh_l: check against a direct computation for the last layer."""
    model = small_model("resnet", "ce_pseudo")
    model.module.double()
    obj = objectives.make_objective(model)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    capture = Capture(model.sampled_blocks)
    _, grads = _base_kinds(model, obj, x, torch.arange(3), capture)
    capture.remove()
    h = model.module.forward_features(x[1:2]).detach().requires_grad_(True)
    logits = model.module.forward_head(h)
    loss = torch.nn.functional.cross_entropy(logits, logits.argmax(1))
    (g,) = torch.autograd.grad(loss, h)
    torch.testing.assert_close(grads[-1][1], g.mean(dim=(2, 3))[0], rtol=1e-6, atol=1e-8)


def _reference_view(x, seed, min_scale=0.5):
    """One image's view computed directly: crop the box, resize with F.interpolate, flip, scale brightness."""
    top, left, ch, cw, flip, bright = view_params(seed, x.shape[1], x.shape[2], min_scale)
    view = torch.nn.functional.interpolate(x[None, :, top : top + ch, left : left + cw], size=x.shape[1:],
                                           mode="bilinear", align_corners=False)[0]  # fmt: skip
    return (view.flip(-1) if flip else view) * bright


def test_ssl_views_are_seeded_per_image_and_equal_crop_and_resize():
    x = torch.rand(6, 3, 20, 24, dtype=torch.float64)
    seeds = [7, 8, 9, 10, 11, 12]
    views = seeded_views(x, seeds)
    for k, seed in enumerate(seeds):
        torch.testing.assert_close(views[k], _reference_view(x[k], seed), rtol=0, atol=1e-6)  # float32 coordinates
        torch.testing.assert_close(seeded_views(x[k : k + 1], [seed])[0], views[k], rtol=0, atol=0)
    assert not torch.equal(seeded_views(x[:1], [7]), seeded_views(x[:1], [8]))


def test_pooling_modes():
    h = torch.arange(24.0).view(1, 4, 6)
    assert torch.equal(pool(h, "cls"), h[:, 0])
    assert torch.equal(pool(h, "mean"), h.mean(1))
    assert pool(h, "both").shape == (1, 12)
    with pytest.raises(ValueError, match="needs tokens"):
        pool(torch.zeros(1, 2, 3, 3), "cls")


def test_zarr_resume_gives_identical_arrays(tmp_path, monkeypatch):
    model = small_model("resnet", "ce_pseudo")
    obj = objectives.make_objective(model)
    images = np.random.default_rng(0).integers(0, 255, size=(20, 40, 40, 3), dtype=np.uint8)
    ids = [str(i) for i in range(20)]
    kw = dict(batch_size=4, chunk_images=8)
    full = extract.extract_to_zarr(model, obj, array_reader(images), ids, tmp_path / "full.zarr", **kw)

    calls = {"n": 0}
    real = extract.batch_features

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # call 1 sizes the arrays; dies on images 12-15, after the first chunk (0-7) is stored
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(extract, "batch_features", dying)
    out = tmp_path / "resumed.zarr"
    with pytest.raises(KeyboardInterrupt):
        extract.extract_to_zarr(model, obj, array_reader(images), ids, out, **kw)
    assert not out.exists() and (tmp_path / "resumed.zarr.partial").exists()
    assert zarr.open_group(str(tmp_path / "resumed.zarr.partial")).attrs["n_done"] == 8
    monkeypatch.setattr(extract, "batch_features", real)
    seen = []
    extract.extract_to_zarr(model, obj, array_reader(images), ids, out, progress=lambda d, n: seen.append(d), **kw)
    assert seen[0] == 12, "resumed after the complete chunk"
    for kind in BASE_KINDS:
        a = read_features(full, kind)
        b = read_features(out, kind)
        for layer in a:
            np.testing.assert_array_equal(a[layer], b[layer])


def _interrupt_after_first_chunk(monkeypatch, *args, **kw):
    """Run extract_to_zarr and kill it on images 12-15 (batch size 4), after the chunk of images 0-7 is stored."""
    calls = {"n": 0}
    real = extract.batch_features

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # call 1 sizes the arrays
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(extract, "batch_features", dying)
    with pytest.raises(KeyboardInterrupt):
        extract.extract_to_zarr(*args, **kw)
    monkeypatch.setattr(extract, "batch_features", real)


def test_a_resume_with_other_weights_restarts_from_the_first_image(tmp_path, monkeypatch, caplog):
    """Same spec and weights name, other weights (a retrained demo model): before, the run resumed at image 12 and
    the first rows came from the old weights."""
    model = small_model("resnet", "ce_pseudo")
    obj = objectives.make_objective(model)
    images = np.random.default_rng(0).integers(0, 255, size=(20, 40, 40, 3), dtype=np.uint8)
    ids = [str(i) for i in range(20)]
    kw = dict(batch_size=4, chunk_images=8)
    out = tmp_path / "resumed.zarr"
    _interrupt_after_first_chunk(monkeypatch, model, obj, array_reader(images), ids, out, **kw)
    with torch.no_grad():
        for param in model.module.parameters():
            param.mul_(1.5)
    clean = extract.extract_to_zarr(model, obj, array_reader(images), ids, tmp_path / "clean.zarr", **kw)
    seen = []
    with caplog.at_level("WARNING", logger="gradbrain.features.extract"):
        extract.extract_to_zarr(model, obj, array_reader(images), ids, out, progress=lambda d, n: seen.append(d), **kw)
    assert seen[0] == 4, "restarted from the first image"
    assert "other weights" in caplog.text and "restarting at image 0" in caplog.text, caplog.text
    for kind in BASE_KINDS:
        a, b = read_features(clean, kind), read_features(out, kind)
        for layer in a:
            np.testing.assert_array_equal(a[layer], b[layer])
    assert store.open_group(out).attrs["weights_sha256"] == resume.weights_digest(model, obj)


def test_an_unreadable_partial_store_is_discarded(tmp_path, caplog):
    """A crash that left a 0-byte zarr.json: before, a JSONDecodeError on every rerun, --forcerun included."""
    model = small_model("resnet", "ce_pseudo")
    obj = objectives.make_objective(model)
    images = np.random.default_rng(0).integers(0, 255, size=(8, 40, 40, 3), dtype=np.uint8)
    ids = [str(i) for i in range(8)]
    partial = tmp_path / "out.zarr.partial"
    partial.mkdir()
    (partial / "zarr.json").write_bytes(b"")
    with caplog.at_level("WARNING", logger="gradbrain.features.extract"):
        out = extract.extract_to_zarr(model, obj, array_reader(images), ids, tmp_path / "out.zarr", batch_size=4)
    assert f"{partial} cannot be read" in caplog.text and "restarting" in caplog.text, caplog.text
    assert not partial.exists()
    assert read_features(out, "gradients", model.layer_names[0]).shape[0] == 8


@pytest.mark.parametrize("name", sorted(load_catalogue()))
def test_catalogue_entries_build_with_the_block_count_the_dag_uses(name):
    """Every real entry's architecture (built without memory on the meta device) has the blocks its family layout
    names, as many as the catalogue tells the workflow at parse time, and the prefix tokens its entry states."""
    import open_clip
    import timm

    spec = model_spec(name)
    with torch.device("meta"):
        if spec["source"] == "timm":
            module = timm.create_model(spec["arch"], **spec["kwargs"])
        else:
            module = open_clip.create_model(spec["arch"], device="meta", **spec["kwargs"])
    blocks = resolve_blocks(module, FAMILY_BLOCKS[spec["family"]])
    assert len(blocks) == n_blocks(spec)
    assert token_layout(module)[0] == spec["prefix_tokens"], "the catalogue says which tokens mean pools"
    assert len(sample_layers(len(blocks), spec["n_layers"])) == min(len(blocks), spec["n_layers"])


def test_autocast_leaves_the_objectives_own_arithmetic_in_float32():
    """Under bf16 autocast only the network runs in bf16: view sampling (affine_grid is a bmm), MAE's patch
    targets and the zero-shot logits stay float32 (in bf16 the views alone put 6 % error into the gradients)."""
    x = torch.rand(3, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        views = seeded_views(x, [1, 2, 3])
        patches = mae.patchify(x, 8)
    assert torch.equal(views, seeded_views(x, [1, 2, 3]))
    assert torch.equal(patches, mae.patchify(x, 8))

    class FixedEmbedding:
        spec = {"name": "fixed"}

        def embed(self, images):
            return torch.linspace(-1, 1, 3 * 16).view(3, 16) + images.mean()

    obj = ZeroShot(torch.randn(5, 16, generator=torch.Generator().manual_seed(0)), 100.0, -10.0, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = obj(FixedEmbedding(), x, torch.arange(3))
    torch.testing.assert_close(low, obj(FixedEmbedding(), x, torch.arange(3)), rtol=0, atol=0)


def test_objective_registry_is_the_schema_enum_and_names_unknown_objectives():
    """One entry per objective: the config schema offers exactly the registry's names, every catalogue entry uses
    one of them, and an unknown one names the config key and the choices."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["$defs"]["model"]["properties"]["objective"]["enum"] == list(objectives.OBJECTIVES)
    assert {spec["objective"] for spec in load_catalogue().values()} <= set(objectives.OBJECTIVES)
    model = small_model("vit", "ce_pseudo")
    model.spec["objective"] = "ce_psuedo"
    with pytest.raises(ValueError, match=r"models\.vit\.objective: unknown objective 'ce_psuedo'.*ce_pseudo"):
        objectives.make_objective(model)


def test_patch_mean_is_timms_avg_pool_and_the_store_says_which_tokens():
    """patch_mean of the last block equals timm's forward_head(pre_logits=True) with global_pool="avg" (the patch
    tokens only) on a ViT with a class token and four register tokens; mean keeps all five prefix tokens."""
    vit_kwargs = {"img_size": 32, "patch_size": 8, "depth": 3, "embed_dim": 32, "num_heads": 2, "num_classes": 5,
                  "reg_tokens": 4, "global_pool": "avg", "fc_norm": False}  # fmt: skip
    model = small_model("vit", kwargs=vit_kwargs, input_size=32, pooling="patch_mean")
    assert (model.prefix_tokens, model.class_token) == (5, True)
    model.module.norm = torch.nn.Identity()  # forward_features is then the last block's output
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    capture = Capture(model.sampled_blocks)
    try:
        acts, _ = _base_kinds(model, objectives.make_objective(model), x, torch.arange(3), capture)
    finally:
        capture.remove()
    with torch.no_grad():
        feats = model.module.forward_features(x)
        timm_avg = model.module.forward_head(feats, pre_logits=True)
    torch.testing.assert_close(acts[-1], timm_avg, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(pool(feats, "mean", 5), timm_avg, atol=1e-3), "mean includes the prefix tokens"
    images = np.random.default_rng(0).integers(0, 255, size=(4, 40, 40, 3), dtype=np.uint8)
    out = extract.extract_to_zarr(model, objectives.make_objective(model), array_reader(images), list("0123"),
                                  Path(tempfile.mkdtemp()) / "f.zarr", batch_size=2, chunk_images=2)  # fmt: skip
    attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    assert attrs["pooling"] == "patch_mean" and attrs["prefix_tokens"] == 5
    assert attrs["pooled_tokens"] == "the patch tokens only (the 5 prefix tokens (class and register) dropped)"


def test_cls_pooling_needs_a_class_token():
    with pytest.raises(ValueError, match=r"models\.resnet\.pooling: 'cls' takes the class token"):
        small_model("resnet", pooling="cls")


@pytest.mark.parametrize("rules", [False, True])
def test_a_batch_out_of_memory_is_split_in_halves(monkeypatch, caplog, rules):
    """A batch above 2 images raises torch.OutOfMemoryError: the loop retries in halves, logs it, and stores what
    an unsplit run stores (bitwise what batches of 2 give; an unsplit batch of 7 to float32 rounding)."""
    model = small_model("vit", "ce_pseudo")
    obj = objectives.make_objective(model)
    images = np.random.default_rng(0).integers(0, 255, size=(7, 40, 40, 3), dtype=np.uint8)
    kinds = ("activations", "gradients", "feedback_alignment", "weight_gradient_sketch") if rules else BASE_KINDS
    whole = extract.extract_arrays(model, obj, images, batch_size=7, kinds=kinds, sketch_size=4)
    pairs = extract.extract_arrays(model, obj, images, batch_size=2, kinds=kinds, sketch_size=4)
    real, sizes = extract.batch_features, []

    def small_device(model, objective, x, *args, **kw):
        sizes.append(len(x))
        if len(x) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, objective, x, *args, **kw)

    monkeypatch.setattr(extract, "batch_features", small_device)
    with caplog.at_level("WARNING", logger="gradbrain.features.extract"):
        split = extract.extract_arrays(model, obj, images, batch_size=7, kinds=kinds, sketch_size=4)
    assert sizes == [7, 4, 2, 2, 3, 2, 1], "halves of halves, down to batches that fit"
    assert "out of device memory on a batch of 7 images" in caplog.text
    for kind in kinds:
        for a, b, c in zip(split[kind], pairs[kind], whole[kind], strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6)


def test_one_image_out_of_memory_is_raised(monkeypatch):
    model = small_model("resnet", "ce_pseudo")

    def no_memory(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(extract, "batch_features", no_memory)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(torch.OutOfMemoryError):
        extract.extract_arrays(model, objectives.make_objective(model), images, batch_size=2)


@pytest.mark.parametrize("autocast", [None, "bfloat16"])
def test_float32_extraction_turns_tf32_off_while_it_runs(monkeypatch, autocast):
    """Without autocast the forward and backward passes run with TF32 off for cuDNN and cuBLAS (PyTorch's default
    lets cuDNN convolutions use TF32: 3e-4 to 7e-4 off the CPU on an H200); bf16 autocast leaves the flags alone;
    either way they are restored afterwards."""
    model = small_model("resnet", "ce_pseudo")
    seen, real = [], extract.batch_features

    def spy(*args, **kw):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return real(*args, **kw)

    monkeypatch.setattr(extract, "batch_features", spy)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        images = torch.zeros((2, 32, 32, 3), dtype=torch.uint8)
        batches = [(images, torch.arange(2))]
        list(extract.iter_features(model, objectives.make_objective(model), batches, autocast=autocast))
        assert seen == [(False, False)] if autocast is None else seen == [(True, True)]
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32, "restored"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
