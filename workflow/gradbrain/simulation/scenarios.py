"""The planted-truth scenarios: what each simulated brain carries and what the pipeline must then find (no heavy
imports: read when the DAG is built).

This module is the one statement of the planted truth. The simulation reads which error signal a scenario's brain
carries (``ERROR_KIND``) and how it is organised (``BACKWARD_ORDERED``); the hierarchy stage's verdicts read the
per-subject thresholds of ``PLANTED`` (``expectations``); the power analysis reads the planted sign of every claim
(``planted_sign``) to label each rate a power or a false-positive rate; the report prints them.

- ``backprop``: the error of layer k is read out where layer k is and after the forward sweep, last layer first.
- ``feedback_alignment``: organised as ``backprop``, with the drivers' feedback-alignment errors as the error signal.
- ``misaligned``: every layer's gradient is read out in the highest ROIs only, late and in the forward order (the
  paper's finding made concrete).
- ``forward_only``: no error signal at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gradbrain.features.kinds import ACTIVATIONS, BASE_KINDS, GRADIENTS

SCENARIOS = ("backprop", "misaligned", "forward_only", "feedback_alignment")
ERROR_KIND = {"backprop": GRADIENTS, "misaligned": GRADIENTS, "feedback_alignment": "feedback_alignment"}
"""The error signal a scenario's brain reads out (none for ``forward_only``)."""
BACKWARD_ORDERED = ("backprop", "feedback_alignment")
"""Scenarios whose error of layer k is read where layer k is, after the forward sweep, last layer first."""


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
    # a learning rule's errors are backward signals like the gradients: backprop's claims with the rule's kind, and
    # the rule's errors fit the brain better than the gradients (under backprop: worse)
    "feedback_alignment": _with_error_kind(_BACKPROP, "feedback_alignment")
    + (Claim("feedback_alignment", "gain_over_gradients", None, (">=", 0.0)),),
}


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
