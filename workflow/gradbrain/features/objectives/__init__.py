"""Per-image losses whose gradients the extraction takes, by name (a catalogue entry's ``objective``).

Every loss L_i depends on image i alone, so one backward pass of the batch sum gives each image's own gradient
(docs/metrics.md). A new objective is one entry of :data:`OBJECTIVES`: a builder ``(model, names, seed)`` of a
callable ``(model, x, index, pause) -> (B,) losses`` with ``name`` and ``settings`` attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gradbrain.features.objectives.classification import CEPseudo
from gradbrain.features.objectives.mae import mae_objective
from gradbrain.features.objectives.ssl import SSLView
from gradbrain.features.objectives.zeroshot import zero_shot
from gradbrain.models.model import LoadedModel

Builder = Callable[[LoadedModel, Sequence[str] | None, int], Callable]
OBJECTIVES: dict[str, Builder] = {
    "ce_pseudo": lambda model, names, seed: CEPseudo(),
    "ssl_view": lambda model, names, seed: SSLView(seed),
    "clip_zeroshot": lambda model, names, seed: zero_shot(model, names, sigmoid=False),
    "siglip_zeroshot": lambda model, names, seed: zero_shot(model, names, sigmoid=True),
    "mae_recon": lambda model, names, seed: mae_objective(model, seed),
}


def make_objective(model: LoadedModel, names: Sequence[str] | None = None, seed: int = 0):
    """The objective declared in the model's catalogue entry; ``names``: the zero-shot text bank's concepts."""
    kind = model.spec["objective"]
    if kind not in OBJECTIVES:
        raise ValueError(
            f"models.{model.spec['name']}.objective: unknown objective '{kind}'; choose one of {sorted(OBJECTIVES)}"
        )
    return OBJECTIVES[kind](model, names, seed)
