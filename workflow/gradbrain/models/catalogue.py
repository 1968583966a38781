"""The model catalogue (resources/models.yaml): one self-contained entry per model, merged with config overrides."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gradbrain import RESOURCES

CATALOGUE_PATH = RESOURCES / "models.yaml"
POOLINGS = ("mean", "patch_mean", "cls", "both")
ENTRY_KEYS = ("source", "arch", "kwargs", "family", "blocks", "n_blocks", "input_size", "crop_pct", "weights",
              "converter", "objective", "pooling", "prefix_tokens", "text_bank", "decoder", "tokenizer", "quick_gelu",
              "notes")  # fmt: skip
"""The keys of a catalogue entry; a config's model entry may override each (besides the schema's own keys)."""
FAMILY_BLOCKS = {  # per family, alternative block layouts (dotted module paths, * = any child); first match wins
    "vit": [["blocks"]],
    "resnet": [["layer1", "layer2", "layer3", "layer4"]],
    "convnext": [["stages.*.blocks"]],
    "open_clip": [["visual.transformer.resblocks"], ["visual.trunk.blocks"], ["visual.trunk.stages.*.blocks"]],
}
BLOCK_COUNTS = {  # blocks per architecture, so the DAG knows the layers at parse time without building models
    "vit_large_patch16_dinov3": 24,
    "vit_large_patch14_dinov2": 24,
    "vit_large_patch16_224": 24,
    "vit_large_patch16_224.mae": 24,
    "resnet50": 16,
    "resnet18": 8,
    "convnext_large": 36,
    "ViT-L-14": 24,
    "ViT-B-16-SigLIP2": 12,
    "ViT-B-32": 12,
}


def load_catalogue(path: str | Path = CATALOGUE_PATH) -> dict[str, dict[str, Any]]:
    """Read the catalogue YAML."""
    with open(path) as fh:
        return yaml.safe_load(fh)


def model_spec(name: str, overrides: dict[str, Any] | None = None, catalogue: dict | None = None) -> dict[str, Any]:
    """The catalogue entry of ``name`` (or of ``overrides['catalogue']``) with the config's overrides applied."""
    catalogue = catalogue if catalogue is not None else load_catalogue()
    overrides = dict(overrides or {})
    key = overrides.pop("catalogue", name)
    if key not in catalogue:
        raise KeyError(
            f"models.{name}: '{key}' is not in the model catalogue {CATALOGUE_PATH}; "
            f"known models: {', '.join(sorted(catalogue))}. Add an entry there or fix the name."
        )
    spec = copy.deepcopy(catalogue[key])
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(spec.get(k), dict):
            spec[k] = {**spec[k], **v}
        else:
            spec[k] = v
    spec["name"] = name
    spec.setdefault("kwargs", {})
    spec.setdefault("pooling", "mean")
    spec.setdefault("n_layers", 22)
    if spec["pooling"] not in POOLINGS:
        raise ValueError(f"models.{name}.pooling: '{spec['pooling']}' is not one of {POOLINGS}")
    return spec


def weight_files(spec: dict[str, Any]) -> dict[str, str]:
    """The files a model's jobs read weights from, by role, ``~`` expanded: ``weights`` (``weights.file``; a demo
    model's weights come from train_demo_model instead) and ``decoder`` (``decoder.file`` of the mae_recon objective).

    Declared as rule inputs, so that a file replaced at the same path re-runs exactly the jobs that read it.
    """
    files = {}
    weights = spec.get("weights") or {}
    if weights.get("file") and not weights.get("demo"):
        files["weights"] = os.path.expanduser(str(weights["file"]))
    decoder = spec.get("decoder") or {}
    if spec.get("objective") == "mae_recon" and decoder.get("file"):
        files["decoder"] = os.path.expanduser(str(decoder["file"]))
    return files


def n_blocks(spec: dict[str, Any]) -> int:
    """Number of blocks of the architecture, from the spec (kwargs.depth, n_blocks) or the known table."""
    if "n_blocks" in spec:
        return int(spec["n_blocks"])
    if "depth" in spec.get("kwargs", {}):
        return int(spec["kwargs"]["depth"])
    if spec["arch"] in BLOCK_COUNTS:
        return BLOCK_COUNTS[spec["arch"]]
    raise KeyError(
        f"models.{spec['name']}: the number of blocks of '{spec['arch']}' is unknown; set n_blocks in its entry"
    )


def sample_layers(total: int, n: int) -> list[int]:
    """Block indices at ``n`` evenly spaced relative depths (every block when the model has fewer)."""
    if n >= total:
        return list(range(total))
    return sorted({int(round(v)) for v in np.linspace(0, total - 1, n)})


def relative_depths(indices: list[int], total: int) -> list[float]:
    """Relative depth l/(L-1) of block l of L."""
    return [i / max(total - 1, 1) for i in indices]
