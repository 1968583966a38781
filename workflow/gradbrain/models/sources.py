"""One adapter per model source (timm, open_clip), as thingsvision gives each source one extractor: each builds the
network of a catalogue entry, loads its weights and reads the preprocessing from the source's own data config."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradbrain.models import owlvit
from gradbrain.models.model import Preprocessing
from gradbrain.models.weights import check_state_dict, hub_error, load_state_dict, missing_errors

# Catalogue `converter`: checkpoints in another library's layout that open_clip models load after key conversion.
CONVERTERS = {"owlvit": owlvit}


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
            except missing_errors() as err:
                raise hub_error(spec, hub, ["model.safetensors", "pytorch_model.bin"], err) from err
            weights_id = f"hf-hub:{hub}"
        else:
            module = timm.create_model(spec["arch"], pretrained=False, **kwargs)
            weights_id = "random-init"
            if weights_file is not None:
                state = load_state_dict(weights_file)
                keys = set(module.state_dict())
                filt = getattr(sys.modules.get(type(module).__module__), "checkpoint_filter_fn", None)
                if filt is not None and not keys <= set(state):
                    state = filt(state, module)
                check_state_dict(module, state, weights_file, spec["arch"])
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
            state = load_state_dict(weights_file)
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
            except missing_errors() as err:
                files = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
                raise hub_error(spec, repo or hub, files, err) from err
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
                weights_file = conv.hub_checkpoint(repo, missing_errors())
            except missing_errors() as err:
                raise hub_error(spec, repo, conv.REPO_FILES, err) from err
            pp_config = conv.hub_preprocessor_config(repo, missing_errors())
            weights_id = f"hf-hub:{repo}"
        else:
            pp_config = conv.read_preprocessor_config(weights_file.parent)
            weights_id = f"file:{weights_file.name}"
        kwargs = dict(spec.get("kwargs", {}))
        module = open_clip.create_model(spec["arch"], force_quick_gelu=bool(spec.get("quick_gelu")), **kwargs)
        try:
            module.load_state_dict(conv.to_open_clip(state or load_state_dict(weights_file)), strict=True)
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


SOURCES = {"timm": TimmSource, "open_clip": OpenClipSource}
