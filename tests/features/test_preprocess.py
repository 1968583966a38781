"""The device-side preprocessing reproduces each catalogue model's own eval transform, applied with PIL.

Per catalogue entry, the architecture is built on the meta device (no memory, no weights) under its pretrained
tag, so its data config is the tag's (timm's pretrained cfg, open_clip's tag table): input size, crop_pct,
crop_mode, interpolation, mean and std. The reference is the library's own transform of that config (timm's
``create_transform``, open_clip's ``image_transform``) on real-sized photographs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from gradbrain.features.preprocess import preprocess
from gradbrain.models import owlvit
from gradbrain.models.catalogue import load_catalogue, model_spec
from gradbrain.models.model import Preprocessing
from gradbrain.models.sources import OpenClipSource, TimmSource

PHOTOS = {  # native sizes: 512 x 512, 400 x 600, 300 x 451, and a portrait 512 x 300
    "astronaut": data.astronaut(),
    "coffee": data.coffee(),
    "chelsea": data.chelsea(),
    "portrait": np.ascontiguousarray(data.astronaut()[:, 106:406]),
}


def _ours_and_reference(spec: dict) -> tuple[Preprocessing, object]:
    """The entry's Preprocessing through gradbrain's source adapter, and the library's eval transform."""
    import open_clip
    import open_clip.transform
    import timm

    if spec["source"] == "timm":
        with torch.device("meta"):
            module = timm.create_model(TimmSource.timm_name(spec), pretrained=False, **spec["kwargs"])
        overrides = {"input_size": (3, spec["input_size"], spec["input_size"])} if "input_size" in spec else {}
        if "crop_pct" in spec:
            overrides["crop_pct"] = spec["crop_pct"]
        cfg = timm.data.resolve_data_config(overrides, model=module)
        return TimmSource.preprocessing(spec, module), timm.data.create_transform(**cfg, is_training=False)
    module = open_clip.create_model(spec["arch"], device="meta", **spec["kwargs"])
    if spec.get("converter"):  # OWL-ViT: its processor's defaults (squash to 768, bicubic, OpenAI mean/std)
        pp = owlvit.preprocessing(None, module.visual.image_size[0])
        prep = Preprocessing(pp["input_size"], pp["mean"], pp["std"], pp["crop_pct"], pp["interpolation"],
                             pp["resize_mode"])  # fmt: skip
        cfg = {"size": pp["input_size"], "mean": pp["mean"], "std": pp["std"], "interpolation": pp["interpolation"],
               "resize_mode": pp["resize_mode"]}  # fmt: skip
    else:
        prep = OpenClipSource.preprocessing(spec, module)
        tag = open_clip.get_pretrained_cfg(spec["arch"], spec["weights"]["hub"])
        cfg = open_clip.transform.merge_preprocess_dict(open_clip.get_model_preprocess_cfg(module), tag)
    return prep, open_clip.transform.image_transform_v2(open_clip.transform.PreprocessCfg(**cfg), is_train=False)


@pytest.mark.parametrize("name", sorted(load_catalogue()))
def test_preprocessing_is_the_models_own_eval_transform(name):
    spec = model_spec(name)
    prep, reference = _ours_and_reference(spec)
    std = torch.tensor(prep.std).view(3, 1, 1)
    for photo, image in PHOTOS.items():
        ref = reference(Image.fromarray(image))
        ours = preprocess(image[None], prep)[0]
        assert ours.shape == ref.shape == (3, prep.input_size, prep.input_size), photo
        grey = ((ours - ref) * std * 255).abs()  # un-normalised, in grey levels
        # at most one grey level, except where Pillow runs its vertical pass first (its choice, not reproduced:
        # SigLIP2's squash of the portrait, 0.03 % of pixels up to 3 levels; OWL-ViT's 768 px upscale, 2 levels)
        assert float(grey.max()) <= 3.001, f"{name} {photo}: {float(grey.max()):.3f} grey levels"
        assert float((grey > 1.001).float().mean()) < 1e-3, f"{name} {photo}: pixels over one grey level"
        assert float(grey.mean()) < 0.25, f"{name} {photo}: mean {float(grey.mean()):.4f} grey levels"


def test_preprocessing_keeps_the_tags_crop_and_mode():
    """The catalogue's timm tags keep their crop_pct (0.95 for ResNet-50, 0.9 for ViT-L and MAE) and open_clip's
    SigLIP2 tag its squash resize, where the previous preprocessing rounded, truncated and floored otherwise."""
    crop = {name: _ours_and_reference(model_spec(name))[0] for name in ("resnet50", "vit_l16", "mae_vitl16")}
    assert [p.crop_pct for p in crop.values()] == [0.95, 0.9, 0.9]
    assert _ours_and_reference(model_spec("siglip2_vitb16"))[0].resize_mode == "squash"
    assert _ours_and_reference(model_spec("clip_vitl14"))[0].resize_mode == "shortest"


def test_unsupported_settings_say_so():
    prep = Preprocessing(8, (0.5,) * 3, (0.5,) * 3, interpolation="lanczos")
    with pytest.raises(ValueError, match="interpolation 'lanczos'"):
        preprocess(np.zeros((1, 10, 10, 3), np.uint8), prep)
    with pytest.raises(ValueError, match="crop_pct"):
        preprocess(np.zeros((1, 10, 10, 3), np.uint8), Preprocessing(8, (0.5,) * 3, (0.5,) * 3, crop_pct=1.2))
