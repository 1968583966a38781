"""``clip_zeroshot`` and ``siglip_zeroshot``: image-text losses against a text bank of the dataset's concepts."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from gradbrain.features.objectives.base import Pause, top_class
from gradbrain.models.model import LoadedModel


class ZeroShot:
    """Image-text loss against a fixed text bank, target = the model's own best text (CLIP softmax or SigLIP sigmoid).

    The bank is encoded once (``text_bank``) and kept on the model's device; every batch reuses it.
    """

    def __init__(self, text_features: torch.Tensor, logit_scale: float, logit_bias: float | None, sigmoid: bool):
        self.text = F.normalize(text_features.float(), dim=-1)
        self.scale, self.bias, self.sigmoid = logit_scale, logit_bias, sigmoid
        self.name = "siglip_zeroshot" if sigmoid else "clip_zeroshot"
        self.settings = {
            "text_bank_size": int(self.text.shape[0]),
            "logit_scale": logit_scale,
            "logit_bias": logit_bias,
        }

    def __call__(self, model: LoadedModel, x: torch.Tensor, index: torch.Tensor, pause: Pause = nullcontext):
        img = F.normalize(model.embed(x).float(), dim=-1)
        if self.text.device != img.device:
            self.text = self.text.to(img.device)
        with torch.autocast(img.device.type, enabled=False):  # logits in float32 (x100 scale) under autocast
            logits = self.scale * img @ self.text.T.to(img.dtype)
        if self.bias is not None:
            logits = logits + self.bias
        target = top_class(model, logits)
        if not self.sigmoid:
            return F.cross_entropy(logits, target, reduction="none")
        labels = 2 * F.one_hot(target, logits.shape[1]).to(logits.dtype) - 1
        return -F.logsigmoid(labels * logits).sum(1)


def _tokenizer(model: LoadedModel):
    """open_clip's tokenizer of the model (``tokenizer`` in the entry names another config), at its context length."""
    import open_clip

    module = model.module
    name = model.spec.get("tokenizer", model.spec["arch"])
    context = getattr(module, "context_length", None) or getattr(getattr(module, "text", None), "context_length", None)
    try:
        return open_clip.get_tokenizer(name, context_length=context)
    except Exception as err:  # an HF tokenizer (SigLIP) needs transformers and its files in the hub cache
        hf = ((open_clip.get_model_config(name) or {}).get("text_cfg") or {}).get("hf_tokenizer_name")
        fetch = f"`hf download {hf}` into the hub cache (HF_HOME) and install transformers" if hf else "check it"
        raise RuntimeError(
            f"model {model.spec['name']}: the tokenizer of {name} for the zero-shot text bank could not be built "
            f"({type(err).__name__}: {err}); {fetch}"
        ) from err


def text_bank(
    model: LoadedModel, names: Sequence[str], template: str = "a photo of a {}.", chunk: int = 256
) -> torch.Tensor:
    """Encode the text bank once per dataset with the model's own text tower and tokenizer, ``chunk`` texts a pass."""
    tokenizer = _tokenizer(model)
    device = next(model.module.parameters()).device
    texts = [template.format(n.replace("_", " ")) for n in names]
    with torch.no_grad():
        return torch.cat(
            [model.module.encode_text(tokenizer(texts[i : i + chunk]).to(device)).float()
             for i in range(0, len(texts), chunk)]
        )  # fmt: skip


def zero_shot(model: LoadedModel, names: Sequence[str] | None, sigmoid: bool) -> ZeroShot:
    """The zero-shot objective of ``model`` against the text bank of ``names``, at the model's logit scale and bias."""
    kind = model.spec["objective"]
    if not names:
        raise ValueError(f"model {model.spec['name']}: {kind} needs a text bank (concept names of the dataset)")
    module = model.module
    scale = float(module.logit_scale.exp()) if hasattr(module, "logit_scale") else 100.0
    bias = getattr(module, "logit_bias", None)
    return ZeroShot(text_bank(model, names), scale, float(bias) if bias is not None else None, sigmoid=sigmoid)
