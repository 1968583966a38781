"""The masked-autoencoder objective (``mae_recon``): masked-patch MSE through an MAE decoder.

timm's MAE weights (``vit_large_patch16_224.mae``) are the encoder only, and so are the original MAE pretraining
checkpoints (``mae_pretrain_vit_*.pth``). The decoder is defined here with the parameter names of the original MAE
repository (facebookresearch/mae, models_mae.py: ``decoder_embed``, ``mask_token``, ``decoder_pos_embed``,
``decoder_blocks.N.*``, ``decoder_norm``, ``decoder_pred``), so it loads from the MAE checkpoints that ship one:
``mae_visualize_vit_large.pth`` (https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_large.pth), whose
encoder loads as the model's ``weights.file`` too. Without such a file there is no mae_recon (use ssl_view).

The loss is MAE's own: the encoder sees only the visible patches (a fixed mask per image, seeded by the image's
index), the decoder predicts every patch, and L_i is the mean squared error over image i's masked patches against
its pixels (per-patch normalised when ``norm_pix_loss``). The sampled blocks therefore run on the visible tokens;
activations and gradients are pooled over those tokens (docs/decisions.md).
"""

from __future__ import annotations

import os
import re
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradbrain.features.objectives.base import to_device
from gradbrain.models.weights import load_state_dict

MAE_DECODER_URL = "https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_large.pth"
DECODER_DEFAULTS = {"num_heads": 16, "mlp_ratio": 4.0, "mask_ratio": 0.75, "norm_pix_loss": True}


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine position embedding, (1, 1 + grid**2, dim), zeros for the class token."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")  # fmt: skip

    def one_d(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    emb = torch.cat([one_d(xs), one_d(ys)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb]).float()[None]


class MAEDecoder(nn.Module):
    """The MAE decoder (models_mae.py ``forward_decoder``), parameter names as in the original checkpoints."""

    def __init__(self, embed_dim: int, decoder_dim: int, depth: int, num_heads: int, num_patches: int,
                 patch_size: int, in_chans: int = 3, mlp_ratio: float = 4.0):  # fmt: skip
        from timm.models.vision_transformer import Block

        super().__init__()
        self.patch_size = patch_size
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        grid = int(round(num_patches**0.5))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(decoder_dim, grid), requires_grad=False)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)]
        )
        self.decoder_norm = norm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, patch_size**2 * in_chans)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, 1 + visible, D) -> predicted patches (B, L, p*p*C), in the original patch order."""
        x = self.decoder_embed(latent)
        n_mask = ids_restore.shape[1] + 1 - x.shape[1]
        x_ = torch.cat([x[:, 1:], self.mask_token.to(x.dtype).expand(x.shape[0], n_mask, -1)], dim=1)
        x_ = torch.gather(x_, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C) in MAE's order (models_mae.py ``patchify``)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)  # einsum nchpwq->nhwpqc, never autocast
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def seeded_masks(index: torch.Tensor, n_patches: int, mask_ratio: float, seed: int, device) -> tuple:
    """Per image: the kept patch ids, the order that restores them, and the mask (1 = hidden), from its own seed."""
    n_keep = int(n_patches * (1 - mask_ratio))
    noise = torch.stack(
        [torch.rand(n_patches, generator=torch.Generator().manual_seed(seed * 1_000_003 + int(i))) for i in index]
    )
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    mask = torch.ones(len(index), n_patches)
    mask[:, :n_keep] = 0
    mask = torch.gather(mask, 1, restore)
    device = torch.device(device)
    return to_device(shuffle[:, :n_keep], device), to_device(restore, device), to_device(mask, device)


class MAERecon:
    """L_i = mean over image i's masked patches of the squared error of the decoder's prediction (MAE's loss)."""

    name = "mae_recon"

    def __init__(self, decoder: MAEDecoder, mask_ratio: float = 0.75, norm_pix_loss: bool = True, seed: int = 0):
        self.decoder, self.mask_ratio, self.norm_pix_loss, self.seed = decoder, mask_ratio, norm_pix_loss, seed
        self.settings = {"mask_ratio": mask_ratio, "norm_pix_loss": norm_pix_loss, "seed": seed}

    def __call__(self, model, x: torch.Tensor, index: torch.Tensor, pause=nullcontext) -> torch.Tensor:
        vit = model.module
        prefix = vit.num_prefix_tokens
        tokens = vit._pos_embed(vit.patch_embed(x))  # class token and position embedding, as timm's forward
        n = tokens.shape[1] - prefix
        keep, restore, mask = seeded_masks(index, n, self.mask_ratio, self.seed, x.device)
        visible = torch.gather(tokens[:, prefix:], 1, keep[..., None].expand(-1, -1, tokens.shape[2]))
        h = vit.norm_pre(torch.cat([tokens[:, :prefix], visible], dim=1))
        h = vit.norm(vit.blocks(h))
        dtype = torch.promote_types(x.dtype, torch.float32)  # the loss in float32 (float64 inputs stay float64)
        pred = self.decoder(h, restore).to(dtype)
        target = patchify(x, self.decoder.patch_size).to(dtype)
        if self.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(-1)
        return (loss * mask).sum(1) / mask.sum(1)


def decoder_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """The model entry's ``decoder`` mapping with its defaults."""
    return {**DECODER_DEFAULTS, **(spec.get("decoder") or {})}


def load_decoder(spec: dict[str, Any], vit: nn.Module) -> MAEDecoder:
    """The MAE decoder of ``spec['decoder']['file']`` for the encoder ``vit`` (eval mode, frozen)."""
    cfg = decoder_settings(spec)
    name = spec["name"]
    if getattr(vit, "num_prefix_tokens", None) != 1 or not hasattr(vit, "_pos_embed"):
        raise ValueError(f"models.{name}: mae_recon needs a timm ViT with one class token ({spec['arch']} is not)")
    if not cfg.get("file"):
        raise FileNotFoundError(
            f"models.{name}: objective mae_recon needs an MAE decoder, and {spec['arch']}'s catalogue weights are "
            f"encoder-only. Set models.{name}.decoder.file (and weights.file) to an original MAE checkpoint that "
            f"contains the decoder, e.g. `wget {MAE_DECODER_URL}`, or use objective ssl_view."
        )
    path = Path(os.path.expanduser(str(cfg["file"])))
    if not path.is_file():
        raise FileNotFoundError(
            f"models.{name}.decoder.file: {path} does not exist. Fetch an MAE checkpoint with its decoder, e.g. "
            f"`wget {MAE_DECODER_URL} -O {path}`."
        )
    state = {
        k: v
        for k, v in load_state_dict(path, f"models.{name}.decoder.file").items()
        if k.startswith("decoder_") or k == "mask_token"
    }
    if "decoder_embed.weight" not in state:
        raise ValueError(
            f"models.{name}.decoder.file: {path} holds no MAE decoder (no decoder_embed.weight); the MAE "
            f"pretraining checkpoints are encoder-only, the visualisation ones ({MAE_DECODER_URL}) are not"
        )
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"decoder_blocks\.(\d+)\.", k)))
    decoder_dim, embed_dim = state["decoder_embed.weight"].shape
    if embed_dim != vit.embed_dim:
        raise ValueError(
            f"models.{name}.decoder.file: {path} decodes {embed_dim}-d tokens, {spec['arch']} has "
            f"{vit.embed_dim}; use the decoder of the same MAE checkpoint as the encoder"
        )
    patch = vit.patch_embed.patch_size
    decoder = MAEDecoder(
        embed_dim,
        decoder_dim,
        depth,
        int(cfg["num_heads"]),
        state["decoder_pos_embed"].shape[1] - 1,
        patch[0] if isinstance(patch, (tuple, list)) else patch,
        mlp_ratio=float(cfg["mlp_ratio"]),
    )
    decoder.load_state_dict(state, strict=True)  # fmt: skip
    device = next(vit.parameters()).device
    return decoder.eval().requires_grad_(False).to(device)


def mae_objective(model, seed: int = 0) -> MAERecon:
    """The mae_recon objective of a loaded model, with its decoder and the entry's mask ratio and target."""
    cfg = decoder_settings(model.spec)
    decoder = load_decoder(model.spec, model.module)
    objective = MAERecon(decoder, float(cfg["mask_ratio"]), bool(cfg["norm_pix_loss"]), seed)
    objective.settings["decoder_file"] = str(cfg["file"])
    return objective
