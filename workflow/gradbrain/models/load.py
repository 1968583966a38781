"""Build catalogue models, load their weights offline, and expose their blocks, embeddings and logits.

One small adapter class per model source (timm, open_clip), as thingsvision gives each source one extractor.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradbrain.models import owlvit
from gradbrain.models.catalogue import FAMILY_BLOCKS, n_blocks, relative_depths, sample_layers

# Catalogue `converter`: checkpoints in another library's layout that open_clip models load after key conversion.
CONVERTERS = {"owlvit": owlvit}


@dataclass
class Preprocessing:
    """Input pipeline taken from the model's own data config."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # shortest: short side to size/crop_pct, centre crop; squash: both sides

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
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
    """Blocks of the first layout whose dotted patterns all match (``*`` = one level).

    Containers (Sequential, ModuleList) give their children.
    """
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


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache this process reads (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set for this process (then nothing is downloaded)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


# Errors that mean "the weight file is not in the cache and could not be fetched"; anything else is a real failure.
def _missing_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub import errors

    return (FileNotFoundError, errors.EntryNotFoundError, errors.OfflineModeIsEnabled, errors.HfHubHTTPError,
            ConnectionError)  # fmt: skip


class WeightsNotFoundError(FileNotFoundError):
    """Catalogue weights that are neither in the hub cache nor downloadable; the message says how to fetch them."""


def _hub_error(spec: dict[str, Any], repo: str, files: Sequence[str], err: BaseException) -> WeightsNotFoundError:
    folder = hub_cache_dir() / ("models--" + repo.replace("/", "--"))
    return WeightsNotFoundError(
        f"weights of model {spec['name']} ({spec['source']} {spec['arch']}, weights.hub '{spec['weights']['hub']}') "
        f"are not in the Hugging Face hub cache: looked for {' or '.join(files)} of the repository '{repo}' in "
        f"{folder} (HF_HUB_OFFLINE={'1' if hub_offline() else '0'}; the cache is HF_HUB_CACHE, else $HF_HOME/hub). "
        f"Fetch them once on a machine with internet into the cache this job reads: `hf download {repo}` "
        f"(huggingface_hub < 1.0: `huggingface-cli download {repo}`; set HF_HOME to choose the cache), or set "
        f"models.{spec['name']}.weights.file to a local state dict. ({type(err).__name__}: {err})"
    )


def _check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """Load ``state`` into ``module``; keys the model lacks are ignored (e.g. an MAE decoder), missing ones fail."""
    missing, _ = module.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(
            f"weights file {path} does not fit {arch}: missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}. "
            "Point weights.file at a state dict of this architecture (timm key names)."
        )


class TimmSource:
    """Models built by timm. Hub weights go through timm's own pretrained loader (``pretrained=True``), which reads
    ``model.safetensors`` (or ``pytorch_model.bin``) of the weights' hub repository from the hub cache; a file is
    loaded as a state dict in timm's key names (the model's own checkpoint filter is applied when keys differ)."""

    @staticmethod
    def timm_name(spec: dict[str, Any]) -> str:
        """The timm model name with its pretrained tag: ``timm/<arch>.<tag>`` hub ids name it, else the arch."""
        import timm

        hub = spec["weights"].get("hub") or ""
        name = hub.split("/", 1)[1] if hub.startswith("timm/") else spec["arch"]
        if name.split(".")[0] != spec["arch"].split(".")[0]:
            raise ValueError(
                f"models.{spec['name']}: weights.hub '{hub}' is not a tag of arch '{spec['arch']}'; "
                f"known tags: {timm.list_pretrained(spec['arch'].split('.')[0] + '.*')}"
            )
        return name

    @staticmethod
    def build(spec: dict[str, Any], weights_file: Path | None) -> tuple[nn.Module, Preprocessing, str]:
        import timm

        hub = spec["weights"].get("hub")
        kwargs = dict(spec.get("kwargs", {}))
        if weights_file is None and hub:
            name = TimmSource.timm_name(spec)
            try:
                module = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"hf_hub_id": hub}, **kwargs)
            except _missing_errors() as err:
                raise _hub_error(spec, hub, ["model.safetensors", "pytorch_model.bin"], err) from err
            weights_id = f"hf-hub:{hub}"
        else:
            module = timm.create_model(spec["arch"], pretrained=False, **kwargs)
            weights_id = "random-init"
            if weights_file is not None:
                state = _load_state_dict(weights_file)
                keys = set(module.state_dict())
                filt = getattr(sys.modules.get(type(module).__module__), "checkpoint_filter_fn", None)
                if filt is not None and not keys <= set(state):
                    state = filt(state, module)
                _check_state_dict(module, state, weights_file, spec["arch"])
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
    """Models built by open_clip (image tower used; text tower for the zero-shot text bank).

    A pretrained tag (``weights.hub``) is resolved with open_clip's own table: the checkpoint comes from the hub
    cache (open_clip_model.safetensors or open_clip_pytorch_model.bin of the tag's repository), QuickGELU follows the
    tag, and the preprocessing (mean, std, resize mode) is the tag's. A file goes through open_clip's checkpoint loader.
    With a ``converter`` in the entry (``owlvit``), a hub repository id that is not a tag, or a file in that
    library's layout, is read from the hub cache or disk and converted to open_clip's key names (``converted``).
    """

    @staticmethod
    def build(spec: dict[str, Any], weights_file: Path | None) -> tuple[nn.Module, Preprocessing, str]:
        import open_clip
        from open_clip import pretrained as oc_pretrained

        hub = spec["weights"].get("hub")
        kwargs = dict(spec.get("kwargs", {}))
        quick_gelu = bool(spec.get("quick_gelu", False))
        converter = spec.get("converter")
        if converter is not None and converter not in CONVERTERS:
            raise ValueError(f"models.{spec['name']}.converter: '{converter}' is not one of {sorted(CONVERTERS)}")
        if converter and weights_file is None and hub and not open_clip.get_pretrained_cfg(spec["arch"], hub):
            return OpenClipSource.converted(spec, None)
        if converter and weights_file is not None:
            state = _load_state_dict(weights_file)
            if CONVERTERS[converter].is_transformers_checkpoint(state):
                return OpenClipSource.converted(spec, weights_file, state)
        if weights_file is None and hub:
            tag_cfg = open_clip.get_pretrained_cfg(spec["arch"], hub)
            if not tag_cfg:
                raise ValueError(
                    f"models.{spec['name']}.weights.hub: '{hub}' is not an open_clip pretrained tag of "
                    f"{spec['arch']}; known tags: {open_clip.list_pretrained_tags_by_model(spec['arch'])}"
                )
            repo, filename = os.path.split(tag_cfg.get("hf_hub", ""))
            try:  # resolve the file first so that a cache miss gets our message, not open_clip's RuntimeError
                oc_pretrained.download_pretrained(tag_cfg)
            except _missing_errors() as err:
                files = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
                raise _hub_error(spec, repo or hub, files, err) from err
            module = open_clip.create_model(
                spec["arch"], pretrained=hub, require_pretrained=True,
                force_quick_gelu=quick_gelu or bool(tag_cfg.get("quick_gelu")), **kwargs,
            )  # fmt: skip
            weights_id = f"open_clip:{spec['arch']}:{hub}"
        else:
            module = open_clip.create_model(
                spec["arch"], pretrained=str(weights_file) if weights_file else None,
                require_pretrained=weights_file is not None, force_quick_gelu=quick_gelu, **kwargs,
            )  # fmt: skip
            weights_id = f"file:{weights_file.name}" if weights_file else "random-init"
        pp = open_clip.get_model_preprocess_cfg(module)
        size = pp.get("size", module.visual.image_size)
        size = size[0] if isinstance(size, (tuple, list)) else size
        prep = Preprocessing(
            input_size=int(spec.get("input_size") or size),
            mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)),
            crop_pct=float(spec.get("crop_pct", 1.0)),
            interpolation=pp.get("interpolation", "bicubic"),
            resize_mode=pp.get("resize_mode", "shortest"),
        )
        return module, prep, weights_id

    @staticmethod
    def converted(
        spec: dict[str, Any], weights_file: Path | None, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[nn.Module, Preprocessing, str]:
        """An open_clip model loaded from a checkpoint in the layout of the entry's ``converter`` (e.g. OWL-ViT's
        transformers checkpoint), from ``weights_file`` or else the hub repository ``weights.hub``; the
        preprocessing comes from the checkpoint's ``preprocessor_config.json`` when there is one."""
        import open_clip

        conv = CONVERTERS[spec["converter"]]
        if weights_file is None:
            repo = spec["weights"]["hub"]
            try:
                weights_file = conv.hub_checkpoint(repo, _missing_errors())
            except _missing_errors() as err:
                raise _hub_error(spec, repo, conv.REPO_FILES, err) from err
            pp_config = conv.hub_preprocessor_config(repo, _missing_errors())
            weights_id = f"hf-hub:{repo}"
        else:
            pp_config = conv.read_preprocessor_config(weights_file.parent)
            weights_id = f"file:{weights_file.name}"
        kwargs = dict(spec.get("kwargs", {}))
        module = open_clip.create_model(spec["arch"], force_quick_gelu=bool(spec.get("quick_gelu")), **kwargs)
        try:
            module.load_state_dict(conv.to_open_clip(state or _load_state_dict(weights_file)), strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"weights {weights_file} of model {spec['name']}, converted by gradbrain.{spec['converter']}, do not "
                f"fit open_clip {spec['arch']} built with kwargs {kwargs}: set the entry's kwargs to the checkpoint's "
                f"sizes (force_image_size, force_context_length, vision_cfg, text_cfg). {str(err)[:800]}"
            ) from err
        size = module.visual.image_size
        pp = conv.preprocessing(pp_config, size[0] if isinstance(size, (tuple, list)) else size)
        prep = Preprocessing(
            input_size=int(spec.get("input_size") or pp["input_size"]),
            mean=pp["mean"],
            std=pp["std"],
            crop_pct=float(spec.get("crop_pct", pp["crop_pct"])),
            interpolation=pp["interpolation"],
            resize_mode=pp["resize_mode"],
        )
        return module, prep, weights_id


CONV_FAMILIES = ("resnet", "convnext")
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
    extra = {}
    if str(device).startswith("cuda") and spec["family"] in CONV_FAMILIES:
        module.to(memory_format=torch.channels_last)  # cuDNN's fast layout for convolutions; numbers as NCHW
        extra["channels_last"] = True
    return LoadedModel(spec, module, blocks, indices, prep, weights_id, extra)


def compile_blocks(model: LoadedModel, **options: Any) -> LoadedModel:
    """Compile every block's ``forward`` with ``torch.compile`` (in place).

    The block modules stay the same objects, so the forward hooks that capture their outputs run around the
    compiled code, and same-shaped blocks share one compiled graph (parameters are graph inputs).
    """
    for block in model.blocks:
        block.forward = torch.compile(block.forward, dynamic=False, **options)
    model.extra["compiled"] = True
    return model
