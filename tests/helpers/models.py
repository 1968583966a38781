"""Small random-init stand-ins of each model family, built offline through the catalogue entries' code paths."""

from __future__ import annotations

import numpy as np
import torch

from gradbrain import store
from gradbrain.models.catalogue import model_spec
from gradbrain.models.load import load_model

CLIP_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
SMALL = {  # small random-init stand-ins of each family, built offline through the catalogue entries' code paths
    "vit": {"catalogue": "demo_vit", "weights": {"demo": False}},
    "dinov3_rope": {
        "catalogue": "dinov3_vitl16",
        "arch": "vit_small_patch16_dinov3",
        "kwargs": {"img_size": 32, "depth": 3, "embed_dim": 64, "num_heads": 2, "num_classes": 7},
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
    "clip": {  # open_clip's own ViT image tower (CLIP, OWL-ViT)
        "catalogue": "owlvit_b32",
        "weights": {"file": None, "hub": None},
        "n_blocks": 2,
        "kwargs": {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
            "text_cfg": CLIP_TEXT,
        },
    },
    "siglip": {  # a timm trunk with attention-pool head and a logit bias (SigLIP2's layout)
        "catalogue": "siglip2_vitb16",
        "weights": {"hub": None},
        "n_blocks": 12,
        "n_layers": 3,
        "tokenizer": "ViT-B-32",
        "kwargs": {
            "embed_dim": 192,
            "force_image_size": 32,
            "vision_cfg": {"image_size": 32, "timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                           "timm_pool": "map", "timm_proj": "none"},
            "text_cfg": {**CLIP_TEXT, "no_causal_mask": True, "proj_bias": True, "pool_type": "last"},
        },
    },
}  # fmt: skip


def small_model(family: str, objective: str | None = None, **extra):
    """A seeded random-init model of ``family`` (a key of SMALL), optionally with another objective."""
    overrides = {**SMALL[family], **extra}
    if objective:
        overrides["objective"] = objective
    torch.manual_seed(0)
    return load_model(model_spec(family, overrides))


def read_features(path, kind: str, layer: str | None = None):
    """One layer (n_images, d), or every layer of ``kind`` as a dict, of a feature store, as float32."""
    group = store.open_group(path)[kind]
    if layer is not None:
        return np.asarray(group[layer][...], dtype=np.float32)
    return {name: np.asarray(group[name][...], dtype=np.float32) for name in store.open_group(path).attrs["layers"]}


def array_reader(images):
    """A stimulus reader over an in-memory uint8 array: ids are row numbers."""
    return lambda ids: images[[int(i) for i in ids]]
