"""When an interrupted extraction may be resumed: the signature of what decides the features, and the partial store.

An extract_features job works in ``<out>.partial`` (unknown to Snakemake, so it survives a killed job). The next run
resumes it only when every part of the signature matches: the model's entry and weights name, the weights
themselves (a digest of every parameter and buffer, since a retrained demo model or a file replaced at the same path
keeps its name), the extraction and objective settings, and the stimuli. A partial store that does not match, or
that cannot be read (a crash while its metadata was written), is deleted and the extraction restarts; the log says
why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import zarr

from gradbrain.models.model import LoadedModel

log = logging.getLogger("gradbrain.features.extract")
"""The extraction's logger: the reasons for a restart belong in its log."""


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def weights_digest(model: LoadedModel, objective: Any = None) -> str:
    """SHA-256 of the weights that decide the features: every parameter and buffer of the model and of the
    objective's own modules and tensors (an MAE decoder, a zero-shot text bank), names, dtypes, shapes and bytes.

    The bytes are hashed in the standard (contiguous) layout on the host, so the digest does not depend on the
    device or memory format; it reads the weights once (about a second per GB).
    """
    h = hashlib.sha256()
    held = getattr(objective, "__dict__", {})
    own = sorted((k, v) for k, v in held.items() if isinstance(v, torch.nn.Module | torch.Tensor))
    tensors = [(f"model.{k}", v) for k, v in model.module.state_dict().items()]
    for key, value in own:
        items = value.state_dict().items() if isinstance(value, torch.nn.Module) else [("", value)]
        tensors += [(f"objective.{key}.{k}", v) for k, v in items]
    for name, tensor in tensors:
        tensor = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def signature_parts(model: LoadedModel, objective: Any, ids: Sequence[str], settings: dict[str, Any]) -> dict[str, str]:
    """What decides the features, hashed part by part (so that a refused resume can say which part changed)."""
    return {
        "model entry": _sha([model.spec, model.weights_id]),
        "weights": weights_digest(model, objective),
        "settings": _sha([settings, getattr(objective, "settings", {})]),
        "stimuli": _sha(list(ids)),
    }


def signature(parts: dict[str, str]) -> str:
    """The one hash of all the parts, stored in the partial store's attributes."""
    return _sha(parts)


def resumable(path: Path, parts: dict[str, str]) -> zarr.Group | None:
    """The partial store at ``path`` when it can be read and was written with the same signature ``parts``;
    otherwise None, the store deleted and the reason logged as a warning."""
    if not path.exists():
        return None
    try:
        group = zarr.open_group(str(path), mode="r+")
        attrs = dict(group.attrs)
        done = int(attrs["n_done"])
        for kind in attrs["kinds"]:
            for layer in attrs["layers"]:
                group[kind][layer]  # every array's metadata is readable
    except Exception as err:  # whatever a crash left behind: the store is rebuilt
        log.warning("%s cannot be read (%s: %s), as a crash while it was written may leave it; deleting it and "
                    "restarting at image 0", path, type(err).__name__, err)  # fmt: skip
        shutil.rmtree(path)
        return None
    if attrs.get("signature") == signature(parts):
        return group
    old = attrs.get("signature_parts") or {}
    changed = ", ".join(k for k in parts if old.get(k) != parts[k]) if old else "signature"
    log.warning("%s was written with other %s (%d images done); deleting it and restarting at image 0",
                path, changed, done)  # fmt: skip
    shutil.rmtree(path)
    return None
