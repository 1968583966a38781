"""``ce_pseudo``: the classifiers' objective."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from gradbrain.features.objectives.base import Pause, top_class
from gradbrain.models.model import LoadedModel


class CEPseudo:
    """Cross-entropy against the model's own top class (classifiers)."""

    name = "ce_pseudo"
    settings: dict = {}

    def __call__(self, model: LoadedModel, x: torch.Tensor, index: torch.Tensor, pause: Pause = nullcontext):
        logits = model.logits(x)
        return F.cross_entropy(logits.float(), top_class(model, logits), reduction="none")
