"""Each layer's own contribution: the part of its features that its predecessor in the computation does not carry.

Layers of a residual network are strongly correlated: h_l = h_{l-1} + f_l(h_{l-1}) carries every earlier layer, and
through the skip connections the gradient g_l = g_{l+1} + J_{f_{l+1}}' g_{l+1} carries every later layer's error.
A brain response driven by one layer is then predicted almost as well by its neighbours, and at low SNR ridge
leans on the shared leading directions, so best-layer and peak-latency estimates collapse onto whichever response
the shared part drives best (docs/power.md: every ResNet gradient layer peaking at the first backward response).

The innovation of layer l is X_l minus its ridge prediction from the previous layer in the direction of
computation: from X_{l-1} for activations (forward; the block's update h_l - h_{l-1} where dimensions match, in
general whatever h_{l-1} does not linearly explain), from X_{l+1} for gradients and other error signals (backward;
the error that block l+1 adds). The first layer of the chain is kept whole. Features are standardised over all
stimuli first; the ridge penalty per column is chosen by leave-one-out (the encoding solver), fitted on the
stimuli only, so no brain data enters (like a PCA of the features).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradbrain.encoding.cv import standardise
from gradbrain.encoding.ridge import fit_predict_gcv
from gradbrain.features.kinds import direction


def residualise(target: np.ndarray, predictor: np.ndarray, alphas: Any, **solver: Any) -> np.ndarray:
    """Standardised ``target`` minus its ridge prediction from standardised ``predictor`` (alpha per column by LOO)."""
    P, _ = standardise(predictor, predictor)
    T, _ = standardise(target, target)
    fitted, _ = fit_predict_gcv(P, T, P, alphas, **solver)
    return (T - fitted).astype(np.float32)


def own_contributions(layers: list[np.ndarray], kind: str, alphas: Any, **solver: Any) -> list[np.ndarray]:
    """The innovation of every layer of ``kind`` (list over layers in depth order of (n, d_l) arrays)."""
    out = []
    last = len(layers) - 1
    for k, X in enumerate(layers):
        prev = k - 1 if direction(kind) == "forward" else k + 1
        if prev < 0 or prev > last:
            out.append(standardise(X, X)[0].astype(np.float32))
        else:
            out.append(residualise(X, layers[prev], alphas, **solver))
    return out
