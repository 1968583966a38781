"""One adapter per model source (timm, open_clip), as thingsvision gives each source one extractor: each builds the
network of a catalogue entry, loads its weights and reads the preprocessing from the source's own data config."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradbrain.models import owlvit
from gradbrain.models.model import Preprocessing
from gradbrain.models.weights import check_state_dict, hub_error, load_state_dict, missing_errors

# Catalogue `converter`: checkpoints in another library's layout that open_clip models load after key conversion.
CONVERTERS = {"owlvit": owlvit}
TIMM_CROP_MODES = {"center": "shortest", "squash": "squash"}
"""timm's eval crop modes and the resize mode of features.preprocess that reproduces each."""
DEFAULT_CROP_PCT = 0.875
"""timm's crop_pct where a data config gives none (timm.data.transforms_factory)."""


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
        else:  # built under the hub tag's name where it is a tag of the arch: its data config is the preprocessing
            tag = hub.split("/", 1)[1] if (hub or "").startswith("timm/") else ""
            name = tag if tag.split(".")[0] == spec["arch"].split(".")[0] else spec["arch"]
            module = timm.create_model(name, pretrained=False, **kwargs)
            weights_id = "random-init"
            if weights_file is not None:
                state = load_state_dict(weights_file, f"models.{spec['name']}.weights.file")
                own = module.state_dict()
                filt = getattr(sys.modules.get(type(module).__module__), "checkpoint_filter_fn", None)
                if filt is not None and not set(own) <= set(state):
                    state = filt(state, module)
                check_state_dict(module, state, weights_file, spec["arch"])
                weights_id = f"file:{weights_file.name}"
        TimmSource.set_input_size(spec, module)
        return module, TimmSource.preprocessing(spec, module), weights_id

    @staticmethod
    def set_input_size(spec: dict[str, Any], module: nn.Module) -> None:
        """A ViT given an ``input_size`` other than the one it was built for gets timm's ``set_input_size``: the
        patch grid, the absolute position embeddings (resampled bicubically, as timm loads checkpoints at another
        size) and the RoPE grid follow. Convolutional networks take any size as they are."""
        size = spec.get("input_size")
        grid = getattr(getattr(module, "patch_embed", None), "img_size", None)
        if size and grid is not None and tuple(grid) != (int(size), int(size)):
            module.set_input_size(img_size=(int(size), int(size)))

    @staticmethod
    def preprocessing(spec: dict[str, Any], module: nn.Module) -> Preprocessing:
        """timm's eval transform of ``module`` (``resolve_data_config``: its tag's input size, crop_pct, crop_mode,
        interpolation, mean and std), with the entry's ``input_size`` and ``crop_pct`` where it sets them."""
        import timm

        cfg = timm.data.resolve_data_config({}, model=module)
        crop_mode = cfg.get("crop_mode") or "center"
        if crop_mode not in TIMM_CROP_MODES:
            raise ValueError(
                f"models.{spec['name']}: timm's data config of {spec['arch']} has crop_mode '{crop_mode}', which "
                f"gradbrain does not reproduce (only {sorted(TIMM_CROP_MODES)}); choose another pretrained tag"
            )
        return Preprocessing(
            input_size=int(spec.get("input_size") or cfg["input_size"][-1]),
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            crop_pct=float(spec.get("crop_pct", cfg.get("crop_pct") or DEFAULT_CROP_PCT)),
            interpolation=cfg.get("interpolation", "bicubic"),
            resize_mode=TIMM_CROP_MODES[crop_mode],
        )


class OpenClipSource:
    """Models built by open_clip (image tower used; text tower for the zero-shot text bank).

    A pretrained tag (``weights.hub``) is resolved with open_clip's own table: the checkpoint comes from the hub
    cache (open_clip_model.safetensors or open_clip_pytorch_model.bin of the tag's repository), QuickGELU follows the
    tag, and the preprocessing (mean, std, interpolation, resize mode) is the tag's. A file goes through open_clip's
    checkpoint loader (after gradbrain has read it once, so that an unreadable file is named with its config key).
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
        key = f"models.{spec['name']}.weights.file"
        state = load_state_dict(weights_file, key) if weights_file is not None else None  # a bad file named here
        if converter and state is not None and CONVERTERS[converter].is_transformers_checkpoint(state):
            return OpenClipSource.converted(spec, weights_file, state)
        size = spec.get("input_size")
        if size and "force_image_size" not in kwargs and not OpenClipSource.timm_tower(spec["arch"], kwargs):
            kwargs["force_image_size"] = int(size)  # open_clip resamples the position embeddings on load
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
        del state
        OpenClipSource.set_input_size(spec, module)
        return module, OpenClipSource.preprocessing(spec, module), weights_id

    @staticmethod
    def timm_tower(arch: str, kwargs: dict[str, Any]) -> bool:
        """Whether the image tower of open_clip's ``arch`` is a timm trunk (SigLIP2) rather than open_clip's ViT."""
        import open_clip

        vision = {**((open_clip.get_model_config(arch) or {}).get("vision_cfg") or {}), **kwargs.get("vision_cfg", {})}
        return bool(vision.get("timm_model_name"))

    @staticmethod
    def set_input_size(spec: dict[str, Any], module: nn.Module) -> None:
        """An ``input_size`` other than the tower's: open_clip's own ViT was built at it (``force_image_size``,
        position embeddings resampled by open_clip on load); a timm trunk is resized by timm's ``set_input_size``."""
        size = spec.get("input_size")
        current = tuple(_pair(module.visual.image_size))
        if not size or current == (int(size), int(size)):
            return
        if not hasattr(module.visual, "set_input_size"):
            raise ValueError(
                f"models.{spec['name']}.input_size: {size} differs from the kwargs.force_image_size {current[0]} of "
                f"{spec['arch']}; set the two to the same size"
            )
        module.visual.set_input_size(int(size))

    @staticmethod
    def preprocessing(spec: dict[str, Any], module: nn.Module) -> Preprocessing:
        """open_clip's eval transform of the model (``image_transform``): the model config's preprocessing with the
        pretrained tag's (mean, std, interpolation, resize mode) merged over it as open_clip's ``create_model``
        merges them, at the tower's image size; the entry's ``input_size`` and ``crop_pct`` where it sets them."""
        import open_clip
        from open_clip.transform import merge_preprocess_dict

        hub = spec["weights"].get("hub")
        tag = open_clip.get_pretrained_cfg(spec["arch"], hub) if hub else {}
        pp = merge_preprocess_dict(open_clip.get_model_preprocess_cfg(module), tag or {})
        return Preprocessing(
            input_size=int(spec.get("input_size") or _pair(module.visual.image_size)[0]),
            mean=tuple(pp["mean"]),
            std=tuple(pp["std"]),
            crop_pct=float(spec.get("crop_pct", 1.0)),
            interpolation=pp["interpolation"],
            resize_mode=pp["resize_mode"],
        )

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
            state = state or load_state_dict(weights_file, f"models.{spec['name']}.weights.file")
            module.load_state_dict(conv.to_open_clip(state), strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"weights {weights_file} of model {spec['name']}, converted by gradbrain.{spec['converter']}, do not "
                f"fit open_clip {spec['arch']} built with kwargs {kwargs}: set the entry's kwargs to the checkpoint's "
                f"sizes (force_image_size, force_context_length, vision_cfg, text_cfg). {str(err)[:800]}"
            ) from err
        pp = conv.preprocessing(pp_config, _pair(module.visual.image_size)[0])
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


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """An image size as (height, width)."""
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
