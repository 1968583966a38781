"""The planted-truth scenarios and the feature kinds their brains carry (no heavy imports: read when the DAG is built).

A scenario decides which error signal the simulated brain reads out (``ERROR_KIND``) and how it is organised:
``backprop`` and ``feedback_alignment`` put the error of layer k where layer k is, after the forward sweep, last layer
first (``BACKWARD_ORDERED``); ``misaligned`` puts every layer's gradient in the highest ROIs, late and in forward
order; ``forward_only`` has no error signal.
"""

from __future__ import annotations

from collections.abc import Iterable

from gradbrain.features.kinds import BASE_KINDS

SCENARIOS = ("backprop", "misaligned", "forward_only", "feedback_alignment")
ERROR_KIND = {"backprop": "gradients", "misaligned": "gradients", "feedback_alignment": "feedback_alignment"}
BACKWARD_ORDERED = ("backprop", "feedback_alignment")


def driver_kinds(scenarios: Iterable[str]) -> tuple[str, ...]:
    """Feature kinds the driver models must provide for ``scenarios``: activations, gradients and any rule kind."""
    extra = [ERROR_KIND[s] for s in scenarios if ERROR_KIND.get(s, "gradients") != "gradients"]
    return (*BASE_KINDS, *dict.fromkeys(extra))
