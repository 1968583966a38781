"""Per-image losses whose gradients the extraction takes (DESIGN.md "Gradients").

Every loss L_i depends on image i alone, so one backward pass of the batch sum gives each image's own gradient.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager, Sequence

import torch
import torch.nn.functional as F

from .models import LoadedModel

Pause = Callable[[], ContextManager]


class CEPseudo:
    """Cross-entropy against the model's own top class (classifiers)."""

    name = "ce_pseudo"

    def __call__(self, model: LoadedModel, x: torch.Tensor, index: torch.Tensor, pause: Pause = nullcontext):
        logits = model.logits(x)
        return F.cross_entropy(logits.float(), logits.argmax(1).detach(), reduction="none")


def seeded_view(x: torch.Tensor, seed: int, min_scale: float = 0.5) -> torch.Tensor:
    """A random resized crop, flip and brightness change of one image (C,H,W), fixed by ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    _, h, w = x.shape
    scale = min_scale + (1 - min_scale) * torch.rand((), generator=g).item()
    ch, cw = max(1, round(h * scale**0.5)), max(1, round(w * scale**0.5))
    top = int(torch.randint(0, h - ch + 1, (), generator=g))
    left = int(torch.randint(0, w - cw + 1, (), generator=g))
    view = x[:, top : top + ch, left : left + cw].unsqueeze(0)
    view = F.interpolate(view, size=(h, w), mode="bilinear", align_corners=False).squeeze(0)
    if torch.rand((), generator=g).item() < 0.5:
        view = view.flip(-1)
    return view * (0.8 + 0.4 * torch.rand((), generator=g).item())


class SSLView:
    """Self-supervised proxy: 1 - cos(z(x), stopgrad z(aug_i(x))), aug_i seeded by the image's index."""

    name = "ssl_view"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, model: LoadedModel, x: torch.Tensor, index: torch.Tensor, pause: Pause = nullcontext):
        z = model.embed(x)
        with torch.no_grad(), pause():
            views = torch.stack(
                [seeded_view(xi.detach().cpu(), self.seed * 1_000_003 + int(i)) for xi, i in zip(x, index)]
            ).to(x.device, x.dtype)
            target = model.embed(views)
        return 1 - F.cosine_similarity(z.float(), target.float(), dim=-1)


class ZeroShot:
    """Image-text loss against a fixed text bank, target = the model's own best text (CLIP softmax or SigLIP sigmoid)."""

    def __init__(self, text_features: torch.Tensor, logit_scale: float, logit_bias: float | None, sigmoid: bool):
        self.text = F.normalize(text_features.float(), dim=-1)
        self.scale, self.bias, self.sigmoid = logit_scale, logit_bias, sigmoid
        self.name = "siglip_zeroshot" if sigmoid else "clip_zeroshot"

    def __call__(self, model: LoadedModel, x: torch.Tensor, index: torch.Tensor, pause: Pause = nullcontext):
        img = F.normalize(model.embed(x).float(), dim=-1)
        logits = self.scale * img @ self.text.to(img.device).T
        if self.bias is not None:
            logits = logits + self.bias
        target = logits.argmax(1).detach()
        if not self.sigmoid:
            return F.cross_entropy(logits, target, reduction="none")
        labels = -torch.ones_like(logits)
        labels[torch.arange(len(target)), target] = 1
        return -F.logsigmoid(labels * logits).sum(1)


def text_bank(model: LoadedModel, names: Sequence[str], template: str = "a photo of a {}.") -> torch.Tensor:
    """Encode the text bank once per dataset with the model's own text tower and tokenizer."""
    import open_clip

    tokenizer = open_clip.get_tokenizer(model.spec["arch"])
    device = next(model.module.parameters()).device
    with torch.no_grad():
        tokens = tokenizer([template.format(n.replace("_", " ")) for n in names]).to(device)
        return model.module.encode_text(tokens).float()


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
    raise NotImplementedError(
        f"model {model.spec['name']}: objective {kind} needs a decoder that the catalogue weights do not ship; "
        "choose ssl_view for this model"
    )
