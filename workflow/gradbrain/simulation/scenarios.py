"""The planted-truth scenarios: what each simulated brain carries and what the pipeline must then find (no heavy
imports: read when the DAG is built).

This module is the one statement of the planted truth. The simulation reads how a scenario's brain is built
(``BRAINS``: which error signal it carries, where and when, which models drive it and how it reads them); the
hierarchy stage's verdicts read the per-subject thresholds of ``PLANTED`` (``expectations``); the power analysis
reads the planted sign of every claim (``planted_sign``) to label each rate a power or a false-positive rate; the
report prints them.

- ``backprop``: the error of layer k is read out where layer k is and after the forward sweep, last layer first.
- ``feedback_alignment``: organised as ``backprop``, with the drivers' feedback-alignment errors as the error signal.
- ``misaligned``: every layer's gradient is read out in the highest ROIs only, late and in the forward order (the
  paper's finding made concrete).
- ``forward_only``: no error signal at all.

The forward-only panel (issue 22): brains with no error signal that the analysed model does not span, against which
no gradient claim may hold.

- ``forward_other``: driven by another model than the analysed one (the power grid's other models);
- ``forward_mixture``: by the analysed model and the other models together;
- ``forward_nonlinear``: each voxel or MEG source reads its layer through a nonlinearity (rectified, squared,
  divisively normalised, or gain-modulated by the network's last layer);
- ``forward_full_rank``: readouts of every direction of a layer, not of its top ``readout_components``;
- ``forward_recurrent``: MEG sources respond to each layer a second time, late (the gradients' latencies of
  ``backprop``: last layer first), as recurrent forward processing would;

and ``backprop_other``: a ``backprop`` brain whose forward and error signals are another network's (a brain that
learned by backprop did so on its own network).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gradbrain.features.kinds import ACTIVATIONS, BASE_KINDS, GRADIENTS


@dataclass(frozen=True)
class Brain:
    """How a scenario's brain is simulated (``simulation.brain``).

    ``error``: the error kind it reads out (None: forward-only); ``order``: where and when the error is read,
    ``backward`` (with its layer, after the forward sweep, last layer first) or ``misaligned``; ``drivers``: which
    models drive it, ``study`` (the configured drivers), ``other`` (the drivers but the analysed model) or ``mixture``
    (the analysed model and the others); ``readout``: ``linear`` or ``nonlinear``; ``full_rank``: read every
    direction of a layer; ``recurrent``: MEG sources respond to each layer again, late and last layer first.
    """

    error: str | None = None
    order: str = "backward"
    drivers: str = "study"
    readout: str = "linear"
    full_rank: bool = False
    recurrent: bool = False


BRAINS: dict[str, Brain] = {
    "backprop": Brain(GRADIENTS),
    "misaligned": Brain(GRADIENTS, order="misaligned"),
    "forward_only": Brain(),
    "feedback_alignment": Brain("feedback_alignment"),
    "forward_other": Brain(drivers="other"),
    "forward_mixture": Brain(drivers="mixture"),
    "forward_nonlinear": Brain(readout="nonlinear"),
    "forward_full_rank": Brain(full_rank=True),
    "forward_recurrent": Brain(recurrent=True),
    "backprop_other": Brain(GRADIENTS, drivers="other"),
}
SCENARIOS = tuple(BRAINS)
FORWARD_PANEL = tuple(name for name, b in BRAINS.items() if b.error is None)
"""The forward-only brains: no error signal, so no gradient claim may hold (their rates are false-positive rates)."""
ERROR_KIND = {name: b.error for name, b in BRAINS.items() if b.error is not None}
"""The error signal a scenario's brain reads out (none for the forward-only brains)."""
BACKWARD_ORDERED = tuple(name for name, b in BRAINS.items() if b.error is not None and b.order == "backward")
"""Scenarios whose error of layer k is read where layer k is, after the forward sweep, last layer first."""
STUDY_SCENARIOS = tuple(name for name, b in BRAINS.items() if b.drivers == "study" and not b.full_rank)
"""Scenarios a simulated study can plant: the others' drivers depend on the analysed model (a study is analysed by
every model at once) or need every direction of the drivers' layers (the stimuli store keeps the top
``readout_components``); they are the power grid's."""


@dataclass(frozen=True)
class Claim:
    """One planted fact of a scenario about a (kind, metric family).

    ``sign``: +1 or -1 when the scenario plants an effect of that sign, 0 when it plants none (any claim of an effect
    is then false), None when the scenario does not decide the sign. ``threshold``: the per-subject check of the
    verdicts, ``(op, value)`` with op ``>=`` or ``<=``, or None.
    """

    kind: str
    family: str
    sign: int | None
    threshold: tuple[str, float] | None = None


_BACKPROP = (
    Claim(ACTIVATIONS, "spatial_score", 1, (">=", 0.5)),
    Claim(GRADIENTS, "spatial_score", 1, (">=", 0.5)),
    Claim(GRADIENTS, "voxel_agreement", 1, (">=", 0.5)),
    Claim(ACTIVATIONS, "temporal_score", 1, (">=", 0.8)),
    Claim(GRADIENTS, "temporal_score", -1, ("<=", -0.8)),
    Claim(GRADIENTS, "after_forward_fraction", None, (">=", 0.9)),
    Claim(GRADIENTS, "spatial_divergence", 0),
    Claim(GRADIENTS, "temporal_divergence", 0),
    Claim(GRADIENTS, "gradient_signal", 1, (">=", 1.0)),
    Claim(GRADIENTS, "spatial_score_unique", 1, (">=", 0.5)),
    Claim(GRADIENTS, "temporal_score_unique", -1, ("<=", -0.8)),
    Claim(GRADIENTS, "spatial_divergence_unique", 0),
    Claim(GRADIENTS, "temporal_divergence_unique", 0),
)


def _with_error_kind(claims: tuple[Claim, ...], kind: str) -> tuple[Claim, ...]:
    """The same claims with the gradients replaced by another error signal."""
    return tuple(Claim(kind if c.kind == GRADIENTS else c.kind, c.family, c.sign, c.threshold) for c in claims)


PLANTED: dict[str, tuple[Claim, ...]] = {
    "backprop": _BACKPROP + (Claim("feedback_alignment", "gain_over_gradients", None, ("<=", 0.0)),),
    "misaligned": (
        Claim(GRADIENTS, "spatial_divergence", 1, (">=", 0.4)),
        Claim(GRADIENTS, "temporal_divergence", 1, (">=", 1.0)),
        Claim(ACTIVATIONS, "spatial_score", 1),
        Claim(ACTIVATIONS, "temporal_score", 1),
        Claim(GRADIENTS, "temporal_score", 1),
        Claim(GRADIENTS, "gradient_signal", 1, (">=", 1.0)),
        Claim(GRADIENTS, "spatial_divergence_unique", 1, (">=", 0.4)),
        Claim(GRADIENTS, "temporal_score_unique", 1, (">=", 0.5)),
        Claim(GRADIENTS, "temporal_divergence_unique", 1, (">=", 1.0)),
    ),
    # no error signal: no gradient-specific signal, so every claim about the gradients' organisation or divergence is
    # false, the paper's D_S and D_T included (they come out about S_a and T_a)
    "forward_only": (
        Claim(ACTIVATIONS, "spatial_score", 1, (">=", 0.5)),
        Claim(ACTIVATIONS, "temporal_score", 1, (">=", 0.8)),
        Claim(GRADIENTS, "gradient_signal", 0, ("<=", 0.0)),
        Claim(GRADIENTS, "spatial_score", 0),
        Claim(GRADIENTS, "voxel_agreement", 0),
        Claim(GRADIENTS, "temporal_score", 0),
        Claim(GRADIENTS, "spatial_divergence", 0),
        Claim(GRADIENTS, "temporal_divergence", 0),
        Claim(GRADIENTS, "spatial_score_unique", 0),
        Claim(GRADIENTS, "temporal_score_unique", 0),
        Claim(GRADIENTS, "spatial_divergence_unique", 0),
        Claim(GRADIENTS, "temporal_divergence_unique", 0),
    ),
    # another network's backprop brain: the same claims; the analysed model's gradients only approximate its errors
    "backprop_other": _BACKPROP,
    # a learning rule's errors are backward signals like the gradients: backprop's claims with the rule's kind, and
    # the rule's errors fit the brain better than the gradients (under backprop: worse)
    "feedback_alignment": _with_error_kind(_BACKPROP, "feedback_alignment")
    + (Claim("feedback_alignment", "gain_over_gradients", None, (">=", 0.0)),),
}


_NO_ERROR = tuple(c for c in PLANTED["forward_only"] if c.kind != ACTIVATIONS)
PLANTED.update({name: _NO_ERROR for name in FORWARD_PANEL if name != "forward_only"})


def expectations(scenario: str) -> list[tuple[str, str, str, float]]:
    """The per-subject thresholds of ``scenario`` as (kind, metric, op, value), in the order of ``PLANTED``."""
    return [(c.kind, c.family, *c.threshold) for c in PLANTED.get(scenario, ()) if c.threshold is not None]


def planted_sign(scenario: str, kind: str, family: str) -> int | None:
    """The planted sign of (kind, family) in ``scenario``: +1, -1, 0 (no effect) or None (not decided)."""
    for c in PLANTED.get(scenario, ()):
        if (c.kind, c.family) == (kind, family):
            return c.sign
    return None


def driver_kinds(scenarios: Iterable[str]) -> tuple[str, ...]:
    """Feature kinds the driver models must provide for ``scenarios``: activations, gradients and any rule kind."""
    extra = [ERROR_KIND[s] for s in scenarios if ERROR_KIND.get(s, GRADIENTS) != GRADIENTS]
    return (*BASE_KINDS, *dict.fromkeys(extra))
