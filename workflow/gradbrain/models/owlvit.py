"""OWL-ViT checkpoints in transformers' layout (google/owlvit-*) as open_clip CLIP state dicts.

OWL-ViT's image and text towers are CLIP towers (pre-LN transformer blocks with QuickGELU, class token, pre- and
post-layernorm, bias-free projections); only the key names, the fused q/k/v projection and the orientation of the
projections differ from open_clip's. The detection heads (``class_head``, ``box_head``, ``layer_norm``) are dropped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

REPO_FILES = ("model.safetensors", "pytorch_model.bin")
PREPROCESSOR_FILE = "preprocessor_config.json"
QKV = ("q_proj", "k_proj", "v_proj")  # order of open_clip's fused in_proj (nn.MultiheadAttention)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}

_TOWERS = {"vision_model.": "visual.", "text_model.": ""}
_FIXED = {  # transformers name under a tower -> open_clip name under the tower's prefix
    "vision_model.": {
        "embeddings.patch_embedding.weight": "conv1.weight",
        "embeddings.class_embedding": "class_embedding",
        "embeddings.position_embedding.weight": "positional_embedding",
        "pre_layernorm.weight": "ln_pre.weight",
        "pre_layernorm.bias": "ln_pre.bias",
        "post_layernorm.weight": "ln_post.weight",
        "post_layernorm.bias": "ln_post.bias",
    },
    "text_model.": {
        "embeddings.token_embedding.weight": "token_embedding.weight",
        "embeddings.position_embedding.weight": "positional_embedding",
        "final_layer_norm.weight": "ln_final.weight",
        "final_layer_norm.bias": "ln_final.bias",
    },
}
_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)")
_LAYER_PARTS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The OwlViTModel part of a checkpoint: OwlViTForObjectDetection nests it under ``owlvit.``."""
    if any(k.startswith("owlvit.") for k in state):
        return {k[len("owlvit.") :]: v for k, v in state.items() if k.startswith("owlvit.")}
    return dict(state)


def is_transformers_checkpoint(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` is in transformers' OwlViTModel / OwlViTForObjectDetection layout."""
    return any(k.startswith("vision_model.embeddings.") for k in _strip(state))


def to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip ``CLIP`` state dict of an OWL-ViT checkpoint (image tower, text tower, projections, logit scale)."""
    src = _strip(state)
    if not is_transformers_checkpoint(src):
        raise ValueError("not an OWL-ViT checkpoint in transformers' layout: no vision_model.embeddings.* keys")
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in src.items():
        tower = next((t for t in _TOWERS if key.startswith(t)), None)
        if tower is None or key.endswith("position_ids"):  # projections below; position_ids are index buffers
            continue
        prefix, rest = _TOWERS[tower], key[len(tower) :]
        if rest in _FIXED[tower]:
            out[prefix + _FIXED[tower][rest]] = value
            continue
        m = _LAYER.fullmatch(rest)
        if m is None:
            raise ValueError(f"OWL-ViT checkpoint key {key} has no open_clip counterpart")
        block, part = f"{prefix}transformer.resblocks.{m.group(1)}.", m.group(2)
        module, _, kind = part.rpartition(".")
        if module.startswith("self_attn.") and module.split(".")[-1] in QKV:
            fused.setdefault(f"{block}attn.in_proj_{kind}", {})[module.split(".")[-1]] = value
        elif module in _LAYER_PARTS:
            out[f"{block}{_LAYER_PARTS[module]}.{kind}"] = value
        else:
            raise ValueError(f"OWL-ViT checkpoint key {key} has no open_clip counterpart")
    for key, parts in fused.items():
        out[key] = torch.cat([parts[p] for p in QKV])
    out["visual.proj"] = src["visual_projection.weight"].T.contiguous()
    out["text_projection"] = src["text_projection.weight"].T.contiguous()
    out["logit_scale"] = src["logit_scale"]
    return out


def preprocessing(config: dict[str, Any] | None, image_size: int) -> dict[str, Any]:
    """Preprocessing of a transformers OWL-ViT image processor config (``preprocessor_config.json``).

    OWL-ViT's processor resizes both sides to the square size (an int ``size`` or height/width), so the resize mode
    is ``squash``; without a config: OpenAI CLIP's mean and std, bicubic, squash to the model's image size.
    """
    config = config or {}
    size = config.get("size", image_size)
    if isinstance(size, dict):
        mode = "shortest" if "shortest_edge" in size else "squash"
        size = size.get("shortest_edge", size.get("height", image_size))
    else:
        mode = "squash"
    crop = config.get("crop_size", size) if config.get("do_center_crop", False) else size
    crop = crop.get("height", size) if isinstance(crop, dict) else crop
    return {
        "input_size": int(crop),
        "mean": tuple(config.get("image_mean", OPENAI_MEAN)),
        "std": tuple(config.get("image_std", OPENAI_STD)),
        "crop_pct": float(crop) / float(size),
        "interpolation": _PIL_RESAMPLE.get(config.get("resample", 3), "bicubic"),
        "resize_mode": mode,
    }


def read_preprocessor_config(folder: Path) -> dict[str, Any] | None:
    """The ``preprocessor_config.json`` next to a checkpoint, if there is one."""
    path = Path(folder) / PREPROCESSOR_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def hub_checkpoint(repo: str, missing: tuple[type[BaseException], ...]) -> Path:
    """The checkpoint file of an OWL-ViT hub repository, from the hub cache (offline mode honoured).

    Tries ``model.safetensors``, then ``pytorch_model.bin``; when neither is there, re-raises the last ``missing``
    error (the lookup errors that mean "not in the cache and not downloadable").
    """
    from huggingface_hub import hf_hub_download

    for filename in REPO_FILES[:-1]:
        try:
            return Path(hf_hub_download(repo, filename))
        except missing:
            pass
    return Path(hf_hub_download(repo, REPO_FILES[-1]))


def hub_preprocessor_config(repo: str, missing: tuple[type[BaseException], ...]) -> dict[str, Any] | None:
    """The repository's ``preprocessor_config.json`` when it is in the cache (or downloadable), else None."""
    from huggingface_hub import hf_hub_download

    try:
        return json.loads(Path(hf_hub_download(repo, PREPROCESSOR_FILE)).read_text())
    except missing:  # optional file: the known defaults apply
        return None
