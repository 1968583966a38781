"""Error signals of alternative learning rules, computed in the extraction pass beside activations and gradients.

Kinds (config ``extraction.kinds``; formulas and what is replaced: docs/metrics.md "Learning-rule kinds"):

- ``feedback_alignment`` (Lillicrap et al. 2016): the backward pass of sum_i L_i with every ``nn.Linear``,
  ``nn.Conv2d`` and self-attention ``nn.MultiheadAttention`` projection sending the error back through a fixed
  random matrix B (same shape as W, seeded per module, rescaled to W's Frobenius norm) instead of W^T.
- ``sign_symmetry`` (Liao et al. 2016): the same, with B = sign(W) * mean|W|.
- ``direct_feedback_alignment`` (Nokland 2016): the output error e_i = dL_i/dz_i (z the network output the objective
  receives: logits or image embedding) sent to every position of block l by a fixed random matrix R_l, then pooled
  like the activations; the layer's own backward path plays no part.
- ``weight_gradient_sketch``: the per-image weight gradient G = dL_i/dW = sum_t delta_t x_t^T of one layer per
  sampled block, sketched by fixed Gaussian projections S1 (k x out), S2 (k x in) of variance 1/k as
  S1 G S2^T = sum_t (S1 delta_t)(S2 x_t)^T, so G never materialises; E<sketch(G), sketch(H)> = <G, H>.

One forward pass serves every kind: the patched layers' backward reads which feedback to use from a shared
:class:`FeedbackState` when it runs, so backprop, feedback alignment and sign symmetry are successive backward passes
of the same graph. Nonlinearities, norms, attention softmax, residual sums, pooling and every parameter used outside
the patched modules (position embeddings, open_clip's visual projection, layer scales) keep their exact backward.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradbrain.features.kinds import FEEDBACK_KINDS, check_kinds
from gradbrain.models.load import LoadedModel

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


def _conv_padding(module: nn.Conv2d):
    """Numeric padding of a zero-padded convolution, or None where conv2d_input cannot invert it ('same')."""
    if module.padding_mode != "zeros" or module.padding == "same":
        return None
    return (0, 0) if module.padding == "valid" else module.padding


def _conv_forward(module: nn.Conv2d, name: str, state: FeedbackState):
    padding = _conv_padding(module)

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
        qkv = _FeedbackLinear.apply(x, module.in_proj_weight, module.in_proj_bias, state, _join(name, "in_proj"))
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
        out = _FeedbackLinear.apply(out, module.out_proj.weight, module.out_proj.bias, state, _join(name, "out_proj"))
        out = out if module.batch_first else out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(1) if average_attn_weights else weights

    return forward


def _join(prefix: str, name: str) -> str:
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
    inside_mha = {_join(n, "out_proj") for n, m in module.named_modules() if isinstance(m, nn.MultiheadAttention)}
    for name, m in module.named_modules():
        forward = None
        if isinstance(m, nn.MultiheadAttention):
            forward = _mha_forward(m, name, state)
        elif type(m).forward in LINEAR_FORWARDS and name not in inside_mha:
            forward = _linear_forward(m, name, state)
        elif type(m) is nn.Conv2d and _conv_padding(m) is not None:
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


# ------------------------------------------------------------------------------------------- weight gradients
def sketch_module(block: nn.Module) -> tuple[str, nn.Module]:
    """The layer whose weight gradient a block's sketch carries: the last of its largest nn.Linear or ungrouped
    nn.Conv2d modules (ViT: mlp.fc2; ResNet BasicBlock and Bottleneck: conv2; ConvNeXt: mlp.fc2; CLIP: mlp.c_proj)."""
    cands = [
        (n, m)
        for n, m in block.named_modules()
        if type(m).forward in LINEAR_FORWARDS or (type(m) is nn.Conv2d and m.groups == 1)
    ]
    if not cands:
        raise ValueError(
            f"block {type(block).__name__} has no nn.Linear or ungrouped nn.Conv2d for "
            "weight_gradient_sketch; drop that kind from extraction.kinds for this model"
        )
    size = max(m.weight.numel() for _, m in cands)
    return [c for c in cands if c[1].weight.numel() == size][-1]


def sketch_matrices(name: str, module: nn.Module, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S1 (k, out) and S2 (k, in, [kh, kw]) with N(0, 1/k) entries, fixed by (seed, layer name)."""
    out_dim = module.weight.shape[0]
    in_shape = tuple(module.weight.shape[1:])
    s1 = seeded_normal((k, out_dim), seed, f"sketch-out/{name}") / math.sqrt(k)
    s2 = seeded_normal((k, *in_shape), seed, f"sketch-in/{name}") / math.sqrt(k)
    return s1, s2


def sketch_input(module: nn.Module, x: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """S2 x_t for every position t: (B, T, k) for a linear layer, (B, k, H', W') for a convolution."""
    if isinstance(module, nn.Conv2d):
        return F.conv2d(x, s2.to(x.dtype), None, module.stride, _conv_padding(module), module.dilation)
    return (x @ s2.to(x.dtype).T).reshape(x.shape[0], -1, s2.shape[0])


def sketch_gradient(module: nn.Module, delta: torch.Tensor, sx: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
    """sum_t (S1 delta_t)(S2 x_t)^T flattened to (B, k1 * k2)."""
    s1 = s1.to(delta.dtype)
    if isinstance(module, nn.Conv2d):
        sd = torch.einsum("kc,bchw->bkhw", s1, delta)
        return torch.einsum("bkhw,bjhw->bkj", sd, sx.to(delta.dtype)).flatten(1)
    sd = delta.reshape(delta.shape[0], -1, delta.shape[-1]) @ s1.T
    return torch.einsum("btk,btj->bkj", sd, sx.to(delta.dtype)).flatten(1)


# -------------------------------------------------------------------------------------------------- the set
class RuleSet:
    """The rule kinds of one model: feedback state, DFA matrices, sketch projections and the hooks that feed them.

    Attach it around the extraction loop (``attach``/``remove`` or ``with rules.attached():``), then call
    :func:`extract_batch_kinds` per batch.
    """

    def __init__(
        self,
        model: LoadedModel,
        kinds: Sequence[str],
        seed: int = 0,
        sketch_size: int = 16,
        make_feedback: Callable[[str, torch.Tensor, str], torch.Tensor] | None = None,
    ):
        self.model, self.kinds = model, check_kinds(kinds)
        self.seed, self.sketch_size = int(seed), int(sketch_size)
        self.state = FeedbackState(seed, make_feedback)
        self.feedback = [k for k in self.kinds if k in FEEDBACK_KINDS]
        self.summary: dict[str, Any] = {}
        self._dfa: dict[tuple[str, int, int], torch.Tensor] = {}
        self._net_out: list[torch.Tensor] = []
        self._sketch: dict[int, dict[str, torch.Tensor]] = {}
        self._sketch_mods: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
        self._stack: ExitStack | None = None
        if "weight_gradient_sketch" in self.kinds:
            prefix = {id(m): n for n, m in model.module.named_modules()}
            for block in model.sampled_blocks:
                name, mod = sketch_module(block)
                full = _join(prefix[id(block)], name) if name else prefix[id(block)]
                self._sketch_mods.append((full, mod, *sketch_matrices(full, mod, self.sketch_size, self.seed)))

    @property
    def layer_modules(self) -> list[str]:
        """Per sampled layer, the module whose weight gradient is sketched."""
        return [m[0] for m in self._sketch_mods]

    def attach(self) -> RuleSet:
        """Patch the feedback modules and hook the sketched layers and the network output (until :meth:`remove`)."""
        stack = self._stack = ExitStack()
        if self.feedback:
            self.summary = stack.enter_context(feedback_layers(self.model.module, self.state))
        for k, (_, mod, _, s2) in enumerate(self._sketch_mods):
            stack.callback(mod.register_forward_hook(self._sketch_hook(k, s2)).remove)
        if "direct_feedback_alignment" in self.kinds:
            stack.enter_context(self._output_capture())
        return self

    def remove(self) -> None:
        """Restore the model's own forwards and drop the hooks."""
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        self.reset()

    @contextmanager
    def attached(self) -> Iterator[RuleSet]:
        """:meth:`attach` for the duration of a with block."""
        self.attach()
        try:
            yield self
        finally:
            self.remove()

    def _sketch_hook(self, k: int, s2: torch.Tensor):
        def hook(module, inputs, output):
            if output.requires_grad:  # the graph-carrying pass only (not ssl_view's stop-gradient view)
                if k in self._sketch:
                    raise RuntimeError(
                        f"{self._sketch_mods[k][0]} ran twice in one forward pass; "
                        "weight_gradient_sketch needs one call per image"
                    )
                self._sketch[k] = {"y": output, "sx": sketch_input(module, inputs[0].detach(), s2.to(output.device))}

        return hook

    @contextmanager
    def _output_capture(self) -> Iterator[None]:
        """Record the network output the objective receives (model.logits or model.embed) when it carries a graph."""
        model = self.model
        for method in ("logits", "embed"):
            bound = getattr(model, method)

            def wrapped(x, _bound=bound):
                z = _bound(x)
                if z.requires_grad:
                    self._net_out.append(z)
                return z

            setattr(model, method, wrapped)
        try:
            yield
        finally:
            for method in ("logits", "embed"):
                model.__dict__.pop(method, None)

    def dfa_matrix(self, layer: str, n_out: int, channels: int, device, dtype) -> torch.Tensor:
        """R_l (n_out, channels) with N(0, 1/n_out) entries, fixed by (seed, layer name)."""
        key = (layer, n_out, channels)
        if key not in self._dfa:
            self._dfa[key] = seeded_normal((n_out, channels), self.seed, f"dfa/{layer}") / math.sqrt(n_out)
        return self._dfa[key].to(device, dtype)

    def reset(self) -> None:
        self._net_out.clear()
        self._sketch.clear()


def broadcast_error(signal: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-image (B, C) signal at every token (B, T, C) or position (B, C, H, W) of a block output."""
    if like.ndim == 4:
        return signal[:, :, None, None].expand_as(like)
    return signal[:, None, :].expand_as(like)


def extract_batch_kinds(
    model: LoadedModel,
    objective: Callable,
    x: torch.Tensor,
    index: torch.Tensor,
    capture,
    rules: RuleSet,
    autocast: str | None = None,
) -> dict[str, list[torch.Tensor]]:
    """Every kind of ``rules`` for one batch, from one forward pass: per kind a list over sampled layers of (B, D)."""
    from gradbrain.features.extract import pool

    pooling, n_layers = model.spec["pooling"], len(model.layer_indices)
    x = x.detach().requires_grad_(True)
    ctx = torch.autocast(x.device.type, dtype=getattr(torch, autocast)) if autocast else nullcontext()
    capture.take()
    rules.reset()
    rules.state.mode = "backprop"
    out: dict[str, list[torch.Tensor]] = {}
    with torch.enable_grad(), ctx:
        losses = objective(model, x, index, capture.paused)
        outputs = capture.take()
        if len(outputs) != n_layers:
            raise RuntimeError(
                f"captured {len(outputs)} block outputs for {n_layers} sampled layers; "
                "a block ran more than once per forward pass"
            )
        total = losses.sum()
        extra = []
        if "direct_feedback_alignment" in rules.kinds:
            if len(rules._net_out) != 1:
                raise RuntimeError(
                    f"direct_feedback_alignment: the objective called the model {len(rules._net_out)} "
                    "times with gradients; it needs exactly one network output per image"
                )
            extra.append(rules._net_out[0])
        if len(rules._sketch) != len(rules._sketch_mods):
            raise RuntimeError("weight_gradient_sketch: a sketched layer did not run in the forward pass")
        sketched = [rules._sketch[k]["y"] for k in range(len(rules._sketch_mods))]
        try:
            grads = torch.autograd.grad(total, outputs + extra + sketched, retain_graph=bool(rules.feedback))
            out["activations"] = [pool(h.detach(), pooling) for h in outputs]
            out["gradients"] = [pool(g, pooling) for g in grads[:n_layers]]
            for i, kind in enumerate(rules.feedback):
                rules.state.mode = kind
                fb = torch.autograd.grad(total, outputs, retain_graph=i < len(rules.feedback) - 1)
                out[kind] = [pool(g, pooling) for g in fb]
        finally:
            rules.state.mode = "backprop"
    if extra:
        e = grads[n_layers].reshape(len(x), -1)
        e = e.to(torch.promote_types(e.dtype, torch.float32))
        out["direct_feedback_alignment"] = [
            pool(
                broadcast_error(
                    e @ rules.dfa_matrix(name, e.shape[1], h.shape[1 if h.ndim == 4 else -1], e.device, e.dtype), h
                ),
                pooling,
            )
            for name, h in zip(model.layer_names, outputs, strict=True)
        ]
    if sketched:
        deltas = grads[n_layers + len(extra) :]
        out["weight_gradient_sketch"] = [
            sketch_gradient(mod, d, rules._sketch[k]["sx"], s1.to(d.device))
            for k, ((_, mod, s1, _), d) in enumerate(zip(rules._sketch_mods, deltas, strict=True))
        ]
    rules.reset()
    return {kind: out[kind] for kind in rules.kinds}
