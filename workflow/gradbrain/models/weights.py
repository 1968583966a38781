"""Where a model's weights come from: a file named in the config, or the Hugging Face hub cache; errors that say
what to do when neither is there."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


def find_weights_file(spec: dict[str, Any], weights_path: str | None) -> Path | None:
    """The weights file of ``spec`` (``weights_path``, else ``weights.file``), or None for the hub cache."""
    if spec["weights"].get("demo") and spec["weights"].get("file"):
        raise ValueError(
            f"models.{spec['name']}: weights.demo is true, so the workflow trains this model itself and "
            f"weights.file ({spec['weights']['file']}) would be ignored. To load the file, set "
            f"models.{spec['name']}.weights.demo: false; to train, remove weights.file."
        )
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


def load_state_dict(path: Path, key: str) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch pickle (tensors only), unwrapped from ``state_dict``/``model``.

    ``key`` is the config key that named the file; a file neither format can read raises a ValueError naming both.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load and safetensors raise many types on a truncated or foreign file
        kind = "safetensors" if path.suffix == ".safetensors" else "torch.save"
        raise ValueError(
            f"{key}: {path} is not a readable {kind} state dict ({type(err).__name__}: {str(err)[:200]}). The file "
            f"is truncated, corrupt or of another format: download it again, or point {key} at a .pt/.pth/"
            ".safetensors state dict of the architecture"
        ) from err
    for name in ("state_dict", "model"):
        if isinstance(state, dict) and name in state and isinstance(state[name], dict):
            state = state[name]
    if not isinstance(state, dict):
        raise ValueError(f"{key}: {path} holds a {type(state).__name__}, not a state dict (a mapping of tensors)")
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
def missing_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub import errors

    return (FileNotFoundError, errors.EntryNotFoundError, errors.OfflineModeIsEnabled, errors.HfHubHTTPError,
            ConnectionError)  # fmt: skip


class WeightsNotFoundError(FileNotFoundError):
    """Catalogue weights that are neither in the hub cache nor downloadable; the message says how to fetch them."""


def hub_error(spec: dict[str, Any], repo: str, files: Sequence[str], err: BaseException) -> WeightsNotFoundError:
    folder = hub_cache_dir() / ("models--" + repo.replace("/", "--"))
    return WeightsNotFoundError(
        f"weights of model {spec['name']} ({spec['source']} {spec['arch']}, weights.hub '{spec['weights']['hub']}') "
        f"are not in the Hugging Face hub cache: looked for {' or '.join(files)} of the repository '{repo}' in "
        f"{folder} (HF_HUB_OFFLINE={'1' if hub_offline() else '0'}; the cache is HF_HUB_CACHE, else $HF_HOME/hub). "
        f"Fetch them once on a machine with internet into the cache this job reads: `hf download {repo}` "
        f"(huggingface_hub < 1.0: `huggingface-cli download {repo}`; set HF_HOME to choose the cache), or set "
        f"models.{spec['name']}.weights.file to a local state dict. ({type(err).__name__}: {err})"
    )


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """Load ``state`` into ``module``; keys the model lacks are ignored (e.g. an MAE decoder), missing ones fail."""
    missing, _ = module.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(
            f"weights file {path} does not fit {arch}: missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}. "
            "Point weights.file at a state dict of this architecture (timm key names)."
        )
