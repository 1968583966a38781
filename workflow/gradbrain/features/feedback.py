"""Feedback alignment and sign symmetry: the backward pass of the same graph with W^T replaced by fixed feedback B.

Every ``nn.Linear``, ``nn.Conv2d`` and self-attention ``nn.MultiheadAttention`` projection gets a forward whose
backward sends the error through B, read from a shared :class:`FeedbackState` when the backward runs, so backprop
and each feedback kind are successive backward passes of one forward pass (formulas: docs/metrics.md
"Learning-rule kinds"). Forward values are unchanged.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
LINEAR_FORWARDS = {nn.Linear.forward}
try:  # timm's Linear only adds a torchscript cast; its eager forward is F.linear
    from timm.layers import Linear as _TimmLinear

    LINEAR_FORWARDS.add(_TimmLinear.forward)
except ImportError:  # pragma: no cover - timm is a dependency
    pass


def seeded_normal(shape: Sequence[int], seed: int, tag: str) -> torch.Tensor:
    """Standard normal float32 values fixed by (seed, tag), the same on every machine (drawn on the CPU)."""
    g = torch.Generator().manual_seed(int(seed) * 2_654_435_761 % 2**31 + zlib.crc32(tag.encode()))
    return torch.randn(*shape, generator=g, dtype=torch.float32)


def feedback_matrix(kind: str, weight: torch.Tensor, name: str, seed: int) -> torch.Tensor:
    """Feedback B of module ``name`` (same shape as W) for ``kind``.

    feedback_alignment: Gaussian, fixed by (seed, name), rescaled to ||W||_F; sign_symmetry: sign(W) * mean|W|, the
    multiple of sign(W) closest to W in Frobenius norm.
    """
    w = weight.detach()
    if kind == "feedback_alignment":
        b = seeded_normal(w.shape, seed, f"fa/{name}").to(w.device, torch.float64)
        return (b * (w.double().norm() / b.norm())).to(w.dtype)
    if kind == "sign_symmetry":
        return torch.sign(w) * w.abs().mean()
    raise ValueError(f"no feedback matrix for kind '{kind}'")


class FeedbackState:
    """Which feedback the patched modules send the error through in the backward pass that runs next.

    ``mode`` is "backprop" (B = W, the exact backward) or a kind of FEEDBACK_KINDS; matrices are made once per
    (mode, module) by ``make(kind, weight, name)`` and cached.
    """

    def __init__(self, seed: int = 0, make: Callable[[str, torch.Tensor, str], torch.Tensor] | None = None):
        self.mode, self.seed = "backprop", int(seed)
        self.make = make or (lambda kind, w, name: feedback_matrix(kind, w, name, self.seed))
        self.cache: dict[tuple[str, str], torch.Tensor] = {}
        self.exact_calls: set[str] = set()

    def matrix(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if self.mode == "backprop":
            return weight
        key = (self.mode, name)
        if key not in self.cache:
            self.cache[key] = self.make(self.mode, weight, name).detach()
        return self.cache[key]


class _FeedbackLinear(torch.autograd.Function):
    """y = x W^T + b; backward dL/dx = dL/dy B (B from the state when the backward runs)."""

    @staticmethod
    def forward(ctx, x, weight, bias, state: FeedbackState, name: str):
        ctx.save_for_backward(weight)
        ctx.state, ctx.name, ctx.dtype = state, name, x.dtype
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        b = ctx.state.matrix(ctx.name, weight)
        gx = (grad @ b.to(grad.dtype)).to(ctx.dtype) if ctx.needs_input_grad[0] else None
        return gx, None, None, None, None


class _FeedbackConv2d(torch.autograd.Function):
    """y = conv2d(x, W) + b; backward dL/dx = the transposed convolution of dL/dy with B instead of W."""

    @staticmethod
    def forward(ctx, x, weight, bias, state: FeedbackState, name: str, stride, padding, dilation, groups):
        ctx.save_for_backward(weight)
        ctx.state, ctx.name, ctx.dtype, ctx.shape = state, name, x.dtype, x.shape
        ctx.conv = (stride, padding, dilation, groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        gx = None
        if ctx.needs_input_grad[0]:
            b = ctx.state.matrix(ctx.name, weight).to(grad.dtype)
            gx = torch.nn.grad.conv2d_input(ctx.shape, b, grad, *ctx.conv).to(ctx.dtype)
        return gx, None, None, None, None, None, None, None, None


def _linear_forward(module: nn.Linear, name: str, state: FeedbackState):
    def forward(x):
        return _FeedbackLinear.apply(x, module.weight, module.bias, state, name)

    return forward


def conv_padding(module: nn.Conv2d):
    """Numeric padding of a zero-padded convolution, or None where conv2d_input cannot invert it ('same')."""
    if module.padding_mode != "zeros" or module.padding == "same":
        return None
    return (0, 0) if module.padding == "valid" else module.padding


def _conv_forward(module: nn.Conv2d, name: str, state: FeedbackState):
    padding = conv_padding(module)

    def forward(x):
        return _FeedbackConv2d.apply(
            x, module.weight, module.bias, state, name, module.stride, padding, module.dilation, module.groups
        )

    return forward


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An attention mask as added to the scores: boolean True (masked) -> -inf, float masks as they are."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


def _mha_forward(module: nn.MultiheadAttention, name: str, state: FeedbackState):
    """Self-attention with its in- and out-projections through _FeedbackLinear (softmax and mixing exact)."""
    original = module.forward

    def forward(
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        supported = (
            query is key is value
            and query.dim() == 3
            and module._qkv_same_embed_dim
            and module.bias_k is None
            and not module.add_zero_attn
            and not (module.training and module.dropout > 0)
        )
        if not supported:  # cross-attention or exotic options: keep the exact backward, and say so
            state.exact_calls.add(name)
            return original(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights,
                attn_mask=attn_mask,
                average_attn_weights=average_attn_weights,
                is_causal=is_causal,
            )
        x = query if module.batch_first else query.transpose(0, 1)  # (B, T, D)
        bsz, t, d = x.shape
        h = module.num_heads
        qkv = _FeedbackLinear.apply(x, module.in_proj_weight, module.in_proj_bias, state, join_name(name, "in_proj"))
        q, k, v = (z.reshape(bsz, t, h, d // h).transpose(1, 2) for z in qkv.chunk(3, dim=-1))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // h)
        mask = torch.zeros(t, t, dtype=scores.dtype, device=scores.device)
        if is_causal and attn_mask is None:
            mask = mask.masked_fill(torch.ones(t, t, dtype=torch.bool, device=mask.device).triu(1), float("-inf"))
        if attn_mask is not None:
            am = _additive(attn_mask, scores.dtype)
            mask = mask + (am.view(bsz, h, t, t) if am.dim() == 3 else am)
        if key_padding_mask is not None:
            mask = mask + _additive(key_padding_mask, scores.dtype).view(bsz, 1, 1, t)
        weights = torch.softmax(scores + mask, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(bsz, t, d)
        out = _FeedbackLinear.apply(
            out, module.out_proj.weight, module.out_proj.bias, state, join_name(name, "out_proj")
        )
        out = out if module.batch_first else out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(1) if average_attn_weights else weights

    return forward


def join_name(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _weighted(module: nn.Module) -> bool:
    return any(p.ndim >= 2 for p in module.parameters(recurse=False))


@contextmanager
def feedback_layers(module: nn.Module, state: FeedbackState) -> Iterator[dict[str, list[str]]]:
    """Give every nn.Linear, nn.Conv2d and nn.MultiheadAttention of ``module`` a forward whose backward uses
    ``state``'s feedback; yields {"replaced": names, "exact": names of other modules with weight matrices}.

    The forward values are unchanged (the same F.linear / F.conv2d calls). Subclasses with their own forward
    (e.g. timm's StdConv2d, Conv2dSame), 'same'-padded or non-zero-padded convolutions keep their exact backward.
    """
    replaced, exact, patched = [], [], []
    inside_mha = {join_name(n, "out_proj") for n, m in module.named_modules() if isinstance(m, nn.MultiheadAttention)}
    for name, m in module.named_modules():
        forward = None
        if isinstance(m, nn.MultiheadAttention):
            forward = _mha_forward(m, name, state)
        elif type(m).forward in LINEAR_FORWARDS and name not in inside_mha:
            forward = _linear_forward(m, name, state)
        elif type(m) is nn.Conv2d and conv_padding(m) is not None:
            forward = _conv_forward(m, name, state)
        if forward is not None and "forward" not in m.__dict__:
            m.forward = forward
            replaced.append(name)
            patched.append(m)
        elif _weighted(m) and name not in inside_mha:
            exact.append(name or type(m).__name__)
    if exact:
        log.info("feedback rules: %d modules replaced; exact backward kept for %s", len(replaced), exact)
    try:
        yield {"replaced": replaced, "exact": exact}
    finally:
        for m in patched:
            del m.forward
