"""Build catalogue models, load their weights offline, and expose their blocks, embeddings and logits.

One small adapter class per model source (timm, open_clip), as thingsvision gives each source one extractor.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .catalogue import FAMILY_BLOCKS, n_blocks, relative_depths, sample_layers


@dataclass
class Preprocessing:
    """Input pipeline taken from the model's own data config."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 1.0
    interpolation: str = "bicubic"

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
        }


@dataclass
class LoadedModel:
    """A network in eval mode with frozen parameters, its sampled blocks and how to call it."""

    spec: dict[str, Any]
    module: nn.Module
    blocks: list[nn.Module]
    layer_indices: list[int]
    preprocessing: Preprocessing
    weights_id: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def depths(self) -> list[float]:
        return relative_depths(self.layer_indices, len(self.blocks))

    @property
    def layer_names(self) -> list[str]:
        return [f"block{i:02d}" for i in self.layer_indices]

    @property
    def sampled_blocks(self) -> list[nn.Module]:
        return [self.blocks[i] for i in self.layer_indices]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (classifiers)."""
        return self.module(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled image embedding before any classifier (used by ssl_view and zero-shot objectives)."""
        if self.spec["source"] == "open_clip":
            return self.module.encode_image(x)
        feats = self.module.forward_features(x)
        return self.module.forward_head(feats, pre_logits=True)


def resolve_blocks(module: nn.Module, layouts: list[list[str]]) -> list[nn.Module]:
    """Blocks of the first layout whose dotted patterns all match (``*`` = one level); containers give their children."""
    named = dict(module.named_modules())
    for layout in layouts:
        blocks: list[nn.Module] = []
        for pattern in layout:
            depth = pattern.count(".")
            matches = [n for n in named if n.count(".") == depth and fnmatch.fnmatch(n, pattern)]
            if not matches:
                break
            for name in sorted(matches, key=_natural_key):
                mod = named[name]
                blocks.extend(mod.children() if isinstance(mod, (nn.Sequential, nn.ModuleList)) else [mod])
        else:
            return blocks
    raise ValueError(f"no block layout of {layouts} matches the modules of {type(module).__name__}")


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in name.replace(".", " ").split()]


def _find_weights_file(spec: dict[str, Any], weights_path: str | None) -> Path | None:
    path = weights_path or spec["weights"].get("file")
    if spec["weights"].get("demo") and not path:
        raise FileNotFoundError(
            f"model {spec['name']} uses demo weights: pass the file written by train_demo_model "
            f"(results/models/{spec['name']}.pt); run `snakemake results/models/{spec['name']}.pt`"
        )
    if path is None:
        return None
    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise FileNotFoundError(
            f"weights for model {spec['name']}: {path} does not exist. Set models.{spec['name']}.weights.file in the "
            f"config to a state dict of {spec['arch']}, or remove it to load from the hub cache."
        )
    return path


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def _hub_error(spec: dict[str, Any], err: Exception) -> FileNotFoundError:
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return FileNotFoundError(
        f"weights '{spec['weights']['hub']}' for model {spec['name']} ({spec['source']} {spec['arch']}) were not "
        f"found in the hub cache ({cache}; offline mode is {'on' if os.environ.get('HF_HUB_OFFLINE') else 'off'}). "
        f"Fetch them once on a machine with internet, e.g. `python -c \"import timm; "
        f"timm.create_model('{spec['arch']}', pretrained=True)\"` (timm) or open_clip.create_model_and_transforms, "
        f"then copy the cache, or set models.{spec['name']}.weights.file to a local state dict. ({err})"
    )


class TimmSource:
    """Models built by timm."""

    @staticmethod
    def build(spec: dict[str, Any], weights_file: Path | None) -> tuple[nn.Module, Preprocessing, str]:
        import timm

        hub = spec["weights"].get("hub")
        kwargs = dict(spec.get("kwargs", {}))
        if weights_file is None and hub:
            try:
                module = timm.create_model(f"hf-hub:{hub}" if "/" in hub else spec["arch"], pretrained=True, **kwargs)
            except Exception as err:  # network or cache miss: say where we looked and how to fetch
                raise _hub_error(spec, err) from err
            weights_id = hub
        else:
            module = timm.create_model(spec["arch"], pretrained=False, **kwargs)
            weights_id = "random-init"
            if weights_file is not None:
                missing, unexpected = module.load_state_dict(_load_state_dict(weights_file), strict=False)
                if missing:
                    raise ValueError(
                        f"weights file {weights_file} does not fit {spec['arch']}: missing keys {missing[:5]}..."
                    )
                weights_id = f"file:{weights_file.name}"
        cfg = timm.data.resolve_data_config({}, model=module)
        size = int(spec.get("input_size") or cfg["input_size"][-1])
        prep = Preprocessing(
            input_size=size,
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            crop_pct=float(spec.get("crop_pct", cfg.get("crop_pct", 1.0))),
            interpolation=cfg.get("interpolation", "bicubic"),
        )
        return module, prep, weights_id


class OpenClipSource:
    """Models built by open_clip (image tower used; text tower for the zero-shot text bank)."""

    @staticmethod
    def build(spec: dict[str, Any], weights_file: Path | None) -> tuple[nn.Module, Preprocessing, str]:
        import open_clip

        hub = spec["weights"].get("hub")
        if weights_file is None and hub:
            try:
                module = open_clip.create_model(spec["arch"], pretrained=hub)
            except Exception as err:
                raise _hub_error(spec, err) from err
            weights_id = f"open_clip:{spec['arch']}:{hub}"
        else:
            module = open_clip.create_model(spec["arch"], pretrained=None)
            weights_id = "random-init"
            if weights_file is not None:
                module.load_state_dict(_load_state_dict(weights_file))
                weights_id = f"file:{weights_file.name}"
        visual = module.visual
        size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
        mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        prep = Preprocessing(input_size=int(spec.get("input_size") or size), mean=tuple(mean), std=tuple(std))
        return module, prep, weights_id


SOURCES = {"timm": TimmSource, "open_clip": OpenClipSource}


def load_model(spec: dict[str, Any], weights_path: str | None = None, device: str = "cpu") -> LoadedModel:
    """Build the model of a catalogue ``spec``, load its weights, freeze it and put it in eval mode."""
    if spec["source"] not in SOURCES:
        raise ValueError(f"models.{spec['name']}.source: '{spec['source']}' is not one of {sorted(SOURCES)}")
    weights_file = _find_weights_file(spec, weights_path)
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
    return LoadedModel(spec, module, blocks, indices, prep, weights_id)
