"""The feature kinds: what each is, which direction it runs, how a configured list is checked (no heavy imports).

``activations`` (the forward pass) and ``gradients`` (backprop's per-image error) are always extracted; the learning
rules (features/rules.py) add their error signals as further kinds from the same forward pass. Every kind but the
activations is an error signal that runs backward through the network. Read when the DAG is built.
"""

from __future__ import annotations

from collections.abc import Sequence

from gradbrain.config import closest

ACTIVATIONS = "activations"
GRADIENTS = "gradients"
BASE_KINDS = (ACTIVATIONS, GRADIENTS)
"""Extracted for every model; the hierarchy compares every other kind with the activations."""
FEEDBACK_KINDS = ("feedback_alignment", "sign_symmetry")
"""Rule kinds computed by a backward pass through fixed feedback matrices in place of the weights."""
RULE_KINDS = ("feedback_alignment", "direct_feedback_alignment", "sign_symmetry", "weight_gradient_sketch")
ALL_KINDS = BASE_KINDS + RULE_KINDS
FORWARD_KINDS = (ACTIVATIONS,)
"""Kinds computed in the forward direction; every other kind (gradients, a rule's errors) runs backward."""


PLACEBO_PREFIX = "placebos/"
"""Where a features store keeps the placebo gradients (features/placebo.py): ``placebos/<j>/<layer>``, beside the
kinds but not one of them (each is the gradients of an objective that is not the model's own)."""


def placebo_key(j: int) -> str:
    """The features-store group of placebo j's gradients (its layers below it, as a kind's)."""
    return f"{PLACEBO_PREFIX}{j:02d}"


def is_placebo(key: str) -> bool:
    return key.startswith(PLACEBO_PREFIX)


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """Validate ``extraction.kinds``: activations and gradients first, then known rule kinds in the given order."""
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown:
        raise ValueError(f"extraction.kinds: {unknown} unknown; choose from {list(ALL_KINDS)}")
    missing = [k for k in BASE_KINDS if k not in kinds]
    if missing:
        raise ValueError(f"extraction.kinds must contain {list(BASE_KINDS)} (missing {missing}); add them")
    return BASE_KINDS + tuple(dict.fromkeys(k for k in kinds if k in RULE_KINDS))


def check_encoded_kinds(kinds: Sequence[str], extracted: Sequence[str]) -> None:
    """Stop when ``encoding.kinds`` names a kind the features stores do not hold (``extracted``: extraction.kinds),
    naming the closest one: the encoding would otherwise leave it out without a word."""
    problems = []
    for kind in (k for k in kinds if k not in extracted):
        if kind in ALL_KINDS:
            problems.append(f"encoding.kinds: '{kind}' is not extracted; add it to extraction.kinds as well")
            continue
        match = closest(kind, extracted)
        hint = f"did you mean '{match}'?" if match else f"the kinds are {', '.join(ALL_KINDS)}"
        problems.append(f"encoding.kinds: '{kind}' is not a kind of extraction.kinds [{', '.join(extracted)}]; {hint}")
    if problems:
        raise ValueError("\n".join(problems))


def direction(kind: str) -> str:
    """``forward`` for activations, ``backward`` for gradients and other error signals."""
    return "forward" if kind in FORWARD_KINDS else "backward"
