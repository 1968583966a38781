"""Build catalogue models through their source's adapter, freeze them, and pick the sampled blocks."""

from __future__ import annotations

from typing import Any

import torch

from gradbrain.models.catalogue import FAMILY_BLOCKS, n_blocks, sample_layers
from gradbrain.models.model import LoadedModel, resolve_blocks, token_layout
from gradbrain.models.sources import SOURCES
from gradbrain.models.weights import find_weights_file

CONV_FAMILIES = ("resnet", "convnext")


def load_model(spec: dict[str, Any], weights_path: str | None = None, device: str = "cpu") -> LoadedModel:
    """Build the model of a catalogue ``spec``, load its weights, freeze it and put it in eval mode."""
    if spec["source"] not in SOURCES:
        raise ValueError(f"models.{spec['name']}.source: '{spec['source']}' is not one of {sorted(SOURCES)}")
    weights_file = find_weights_file(spec, weights_path)
    module, prep, weights_id = SOURCES[spec["source"]].build(spec, weights_file)
    module.eval().requires_grad_(False).to(device)
    layouts = [spec["blocks"]] if "blocks" in spec else FAMILY_BLOCKS[spec["family"]]
    blocks = resolve_blocks(module, layouts)
    try:
        expected = n_blocks(spec)
    except KeyError:
        expected = len(blocks)
    if expected != len(blocks):
        raise ValueError(
            f"models.{spec['name']}: {spec['arch']} has {len(blocks)} blocks but the catalogue says {expected}; "
            "set n_blocks in its entry"
        )
    indices = sample_layers(len(blocks), int(spec["n_layers"]))
    extra = {}
    if str(device).startswith("cuda") and spec["family"] in CONV_FAMILIES:
        module.to(memory_format=torch.channels_last)  # cuDNN's fast layout for convolutions; numbers as NCHW
        extra["channels_last"] = True
    prefix, class_token = token_layout(module)
    if spec["pooling"] in ("cls", "both") and not class_token:
        raise ValueError(
            f"models.{spec['name']}.pooling: '{spec['pooling']}' takes the class token, and {spec['arch']} has none; "
            "use mean or patch_mean"
        )
    return LoadedModel(spec, module, blocks, indices, prep, weights_id, extra, prefix, class_token)


def compile_blocks(model: LoadedModel, **options: Any) -> LoadedModel:
    """Compile every block's ``forward`` with ``torch.compile`` (in place).

    The block modules stay the same objects, so the forward hooks that capture their outputs run around the
    compiled code, and same-shaped blocks share one compiled graph (parameters are graph inputs).
    """
    for block in model.blocks:
        block.forward = torch.compile(block.forward, dynamic=False, **options)
    model.extra["compiled"] = True
    return model
