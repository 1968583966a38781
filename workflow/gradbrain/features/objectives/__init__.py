"""Per-image losses whose gradients the extraction takes (DESIGN.md "Gradients").

Every loss L_i depends on image i alone, so one backward pass of the batch sum gives each image's own gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from gradbrain.models.load import LoadedModel

Pause = Callable[[], ContextManager]


def to_device(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Copy a small host tensor to ``device`` without stalling the host: a copy from pageable memory would wait
    for all queued GPU work, one from pinned memory is queued behind it."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, dtype or t.dtype, non_blocking=True)


class CEPseudo:
    """Cross-entropy against the model's own top class (classifiers)."""

    name = "ce_pseudo"
    settings: dict = {}

    def __call__(self, model: LoadedModel, x: torch.Tensor, index: torch.Tensor, pause: Pause = nullcontext):
        logits = model.logits(x)
        return F.cross_entropy(logits.float(), logits.argmax(1).detach(), reduction="none")


def view_params(seed: int, h: int, w: int, min_scale: float = 0.5) -> tuple[int, int, int, int, bool, float]:
    """The seeded augmentation of one image: crop box (top, left, height, width), horizontal flip, brightness."""
    g = torch.Generator().manual_seed(int(seed))
    scale = min_scale + (1 - min_scale) * torch.rand((), generator=g).item()
    ch, cw = max(1, round(h * scale**0.5)), max(1, round(w * scale**0.5))
    top = int(torch.randint(0, h - ch + 1, (), generator=g))
    left = int(torch.randint(0, w - cw + 1, (), generator=g))
    flip = torch.rand((), generator=g).item() < 0.5
    return top, left, ch, cw, flip, 0.8 + 0.4 * torch.rand((), generator=g).item()


def seeded_views(x: torch.Tensor, seeds: Sequence[int], min_scale: float = 0.5) -> torch.Tensor:
    """Per image of (B,C,H,W): a random resized crop (bilinear), flip and brightness change fixed by its seed.

    One batched ``grid_sample`` on the images' device (no host round trip); each output pixel samples the crop as
    ``F.interpolate(crop, (H, W), mode="bilinear", align_corners=False)`` does, source coordinates clamped to the
    crop, so a view depends on its own image and seed only.
    """
    b, _, h, w = x.shape
    rows = []  # per image: affine map of the output grid into the crop, the crop's edge-pixel centres, brightness
    for seed in seeds:
        top, left, ch, cw, flip, bright = view_params(seed, h, w, min_scale)
        rows.append([(-1 if flip else 1) * cw / w, 0, (2 * left + cw) / w - 1, 0, ch / h, (2 * top + ch) / h - 1,
                     (2 * left + 1) / w - 1, (2 * top + 1) / h - 1,
                     (2 * (left + cw) - 1) / w - 1, (2 * (top + ch) - 1) / h - 1, bright])  # fmt: skip
    params = to_device(torch.tensor(rows, dtype=torch.float64), x.device, x.dtype)
    theta, lo, hi, gain = params[:, :6].view(b, 2, 3), params[:, 6:8], params[:, 8:10], params[:, 10]
    with torch.autocast(x.device.type, enabled=False):  # affine_grid is a bmm: under autocast it would be bf16
        grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
        grid = torch.maximum(torch.minimum(grid, hi[:, None, None]), lo[:, None, None])
        views = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return views * gain.view(b, 1, 1, 1)


class SSLView:
    """Self-supervised proxy: 1 - cos(z(x), stopgrad z(aug_i(x))), aug_i seeded by the image's index."""

    name = "ssl_view"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.settings = {"seed": seed, "view": "seeded resized crop (scale 0.5-1), flip, brightness 0.8-1.2"}

    def __call__(self, model: LoadedModel, x: torch.Tensor, index: torch.Tensor, pause: Pause = nullcontext):
        z = model.embed(x)
        with torch.no_grad(), pause():
            views = seeded_views(x.detach(), [self.seed * 1_000_003 + int(i) for i in index])
            target = model.embed(views)
        return 1 - F.cosine_similarity(z.float(), target.float(), dim=-1)


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
        target = logits.argmax(1).detach()
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


def make_objective(model: LoadedModel, names: Sequence[str] | None = None, seed: int = 0):
    """The objective declared in the model's catalogue entry."""
    kind = model.spec["objective"]
    if kind == "ce_pseudo":
        return CEPseudo()
    if kind == "ssl_view":
        return SSLView(seed)
    if kind in ("clip_zeroshot", "siglip_zeroshot"):
        if not names:
            raise ValueError(f"model {model.spec['name']}: {kind} needs a text bank (concept names of the dataset)")
        module = model.module
        scale = float(module.logit_scale.exp()) if hasattr(module, "logit_scale") else 100.0
        bias = getattr(module, "logit_bias", None)
        return ZeroShot(
            text_bank(model, names),
            scale,
            float(bias) if bias is not None else None,
            sigmoid=kind == "siglip_zeroshot",
        )
    if kind == "mae_recon":
        from gradbrain.features.objectives.mae import mae_objective

        return mae_objective(model, seed)
    raise ValueError(f"models.{model.spec['name']}.objective: unknown objective '{kind}'")
