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

One forward pass serves every kind: the patched layers' backward (features/feedback.py) reads which feedback to use
from a shared FeedbackState when it runs, so backprop, feedback alignment and sign symmetry are successive backward
passes of the same graph. Nonlinearities, norms, attention softmax, residual sums, pooling and every parameter used
outside the patched modules (position embeddings, open_clip's visual projection, layer scales) keep their exact
backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradbrain.features.feedback import (
    LINEAR_FORWARDS,
    FeedbackState,
    conv_padding,
    feedback_layers,
    join_name,
    seeded_normal,
)
from gradbrain.features.kinds import FEEDBACK_KINDS, check_kinds
from gradbrain.models.model import LoadedModel


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
        return F.conv2d(x, s2.to(x.dtype), None, module.stride, conv_padding(module), module.dilation)
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

    Attach it around the extraction loop (``attach``/``remove`` or ``with rules.attached():``). The extraction's
    per-batch pass (extract.batch_features) asks it for its error signals: :meth:`targets`, further tensors whose
    gradient the backprop pass takes too; :meth:`feedback_gradients`, one more backward pass per feedback kind; and
    :meth:`features`, the kinds computed from those gradients.
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
                full = join_name(prefix[id(block)], name) if name else prefix[id(block)]
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
        """Forget the tensors recorded in the last forward pass; the next backward pass is backprop."""
        self._net_out.clear()
        self._sketch.clear()
        self.state.mode = "backprop"

    @property
    def retain_graph(self) -> bool:
        """Whether the backprop pass keeps the graph: the feedback kinds run further backward passes through it."""
        return bool(self.feedback)

    def targets(self) -> list[torch.Tensor]:
        """Tensors of this forward pass whose gradient the backprop pass takes beside the block outputs: the network
        output (direct_feedback_alignment), then the sketched layers' outputs (weight_gradient_sketch)."""
        extra = []
        if "direct_feedback_alignment" in self.kinds:
            if len(self._net_out) != 1:
                raise RuntimeError(
                    f"direct_feedback_alignment: the objective called the model {len(self._net_out)} "
                    "times with gradients; it needs exactly one network output per image"
                )
            extra.append(self._net_out[0])
        if len(self._sketch) != len(self._sketch_mods):
            raise RuntimeError("weight_gradient_sketch: a sketched layer did not run in the forward pass")
        return extra + [self._sketch[k]["y"] for k in range(len(self._sketch_mods))]

    def feedback_gradients(self, total: torch.Tensor, outputs: Sequence[torch.Tensor]) -> dict[str, tuple]:
        """Per feedback kind, d total / d outputs by one more backward pass through the feedback matrices."""
        out = {}
        try:
            for i, kind in enumerate(self.feedback):
                self.state.mode = kind
                out[kind] = torch.autograd.grad(total, outputs, retain_graph=i < len(self.feedback) - 1)
        finally:
            self.state.mode = "backprop"
        return out

    def features(
        self, outputs: Sequence[torch.Tensor], target_grads: Sequence[torch.Tensor], pool: Callable
    ) -> dict[str, list[torch.Tensor]]:
        """The kinds computed from the gradients of :meth:`targets` (in their order), per sampled layer (B, D).

        direct_feedback_alignment: e R_l at every position of block l, pooled by ``pool`` like the activations;
        weight_gradient_sketch: S1 G S2^T of the layer's sketched module.
        """
        out: dict[str, list[torch.Tensor]] = {}
        grads = list(target_grads)
        if "direct_feedback_alignment" in self.kinds:
            e = grads.pop(0)
            e = e.reshape(len(e), -1)
            e = e.to(torch.promote_types(e.dtype, torch.float32))
            out["direct_feedback_alignment"] = [
                pool(broadcast_error(e @ self.dfa_matrix(name, e.shape[1], _channels(h), e.device, e.dtype), h))
                for name, h in zip(self.model.layer_names, outputs, strict=True)
            ]
        if self._sketch_mods:
            out["weight_gradient_sketch"] = [
                sketch_gradient(mod, d, self._sketch[k]["sx"], s1.to(d.device))
                for k, ((_, mod, s1, _), d) in enumerate(zip(self._sketch_mods, grads, strict=True))
            ]
        return out


def _channels(h: torch.Tensor) -> int:
    """Channels of a block output: dim 1 of a feature map (B, C, H, W), the last of tokens (B, T, C)."""
    return h.shape[1 if h.ndim == 4 else -1]


def broadcast_error(signal: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-image (B, C) signal at every token (B, T, C) or position (B, C, H, W) of a block output."""
    if like.ndim == 4:
        return signal[:, :, None, None].expand_as(like)
    return signal[:, None, :].expand_as(like)
