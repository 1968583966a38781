"""Placebo gradients (features/placebo.py): the model's own objective on its output rotated by a seeded orthogonal
matrix, against the model's own decision, from the same forward pass, equal to an independent re-evaluation of that
rotated objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.models import array_reader, small_model

from gradbrain import store
from gradbrain.features import extract, objectives
from gradbrain.features.kinds import placebo_key
from gradbrain.features.objectives.base import KEPT_DECISION
from gradbrain.features.placebo import Placebos, rotation

PHOTO_NAMES = ["dog", "coat rack", "banana"]


class Rotated:
    """The independent reference: the objective called on a model whose output methods rotate by Q (a full forward
    pass per call, no tape)."""

    def __init__(self, objective, q_seed: int, keep_decision: bool = True):
        self.objective, self.q_seed, self.keep = objective, q_seed, keep_decision
        self.name, self.settings = "rotated", {}

    def decision(self, model, x, pause):
        """The unrotated output's top class, computed here from the objective's definition (None: no decision)."""
        with pause(), torch.no_grad():
            if self.objective.name == "ce_pseudo":
                return model.logits(x).argmax(1)
            if self.objective.name.endswith("zeroshot"):
                return (F.normalize(model.embed(x).float(), dim=-1) @ self.objective.text.T.float()).argmax(1)
        return None

    def __call__(self, model, x, index, pause):
        real = {m: getattr(type(model), m).__get__(model) for m in ("logits", "embed")}
        decision = self.decision(model, x, pause) if self.keep else None
        if decision is not None:
            model.__dict__[KEPT_DECISION] = decision

        def rotated(method):
            def call(inp):
                out = real[method](inp)
                if not out.requires_grad:
                    return out  # a stop-gradient target (ssl_view's view) is not rotated
                return out @ rotation(self.q_seed, out.shape[-1], out.device, out.dtype)

            return call

        model.logits, model.embed = rotated("logits"), rotated("embed")
        try:
            return self.objective(model, x, index, pause)
        finally:
            del model.logits, model.embed
            model.__dict__.pop(KEPT_DECISION, None)


def _images(n: int = 6, size: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, size=(n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("family", "objective"),
    [("vit", "ce_pseudo"), ("resnet", "ce_pseudo"), ("dinov3_rope", "ssl_view"), ("clip", "clip_zeroshot")],
)
def test_placebo_gradients_are_the_gradients_of_the_rotated_objective(family, objective):
    model = small_model(family, objective)
    obj = objectives.make_objective(model, names=PHOTO_NAMES)
    images = _images()
    got = extract.extract_arrays(model, obj, images, batch_size=3, placebos=3, rule_seed=5)
    for j in range(3):
        ref = extract.extract_arrays(model, Rotated(obj, 5 * 1000 + j), images, batch_size=6)["gradients"]
        for a, b in zip(got[placebo_key(j)], ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max())
        if objective != "ssl_view":  # the rotated output's own top class would give other gradients
            own = extract.extract_arrays(model, Rotated(obj, 5 * 1000 + j, False), images, 6)["gradients"][-1]
            assert not np.allclose(got[placebo_key(j)][-1], own, rtol=1e-3, atol=1e-6 * np.abs(own).max())
    for k, layer in enumerate(got["gradients"]):  # not the model's own error, and not one another's
        for j in range(3):
            r = np.corrcoef(layer.ravel(), got[placebo_key(j)][k].ravel())[0, 1]
            assert abs(r) < 0.9, (k, j, r)
    r01 = np.corrcoef(got[placebo_key(0)][-1].ravel(), got[placebo_key(1)][-1].ravel())[0, 1]
    assert abs(r01) < 0.9
    np.testing.assert_array_equal(got["gradients"][0], extract.extract_arrays(model, obj, images, 3)["gradients"][0])


def test_rotations_are_orthogonal_seeded_and_distinct():
    q = rotation(3, 12, torch.device("cpu"), torch.float64)
    np.testing.assert_allclose((q.T @ q).numpy(), np.eye(12), atol=1e-12)
    assert torch.equal(q, rotation(3, 12, torch.device("cpu"), torch.float64))
    assert not torch.allclose(q, rotation(4, 12, torch.device("cpu"), torch.float64))


def test_placebos_beside_learning_rules_change_neither(tmp_path):
    """With feedback alignment (which patches the backward pass) and DFA (which wraps the output methods), the
    kinds equal a run without placebos and the placebos a run without rules."""
    model = small_model("vit", "ce_pseudo")
    obj = objectives.make_objective(model)
    images = _images(4)
    kinds = ("activations", "gradients", "feedback_alignment", "direct_feedback_alignment")
    both = extract.extract_arrays(model, obj, images, batch_size=2, kinds=kinds, placebos=2)
    rules = extract.extract_arrays(model, obj, images, batch_size=2, kinds=kinds)
    plain = extract.extract_arrays(model, obj, images, batch_size=2, placebos=2)
    for kind in kinds:
        for a, b in zip(both[kind], rules[kind], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for key in (placebo_key(0), placebo_key(1)):
        for a, b in zip(both[key], plain[key], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_the_store_keeps_placebos_apart_from_the_kinds(tmp_path):
    model = small_model("vit", "ce_pseudo")
    images = _images(5)
    ids = [str(i) for i in range(5)]
    out = extract.extract_to_zarr(model, objectives.make_objective(model), array_reader(images), ids,
                                  tmp_path / "f.zarr", batch_size=2, chunk_images=2, placebos=2)  # fmt: skip
    group = store.open_group(out)
    assert group.attrs["kinds"] == ["activations", "gradients"] and group.attrs["placebos"] == 2
    direct = extract.extract_arrays(model, objectives.make_objective(model), images, batch_size=2, placebos=2)
    for j in range(2):
        for name, ref in zip(model.layer_names, direct[placebo_key(j)], strict=True):
            np.testing.assert_allclose(np.asarray(group[placebo_key(j)][name][...]), ref, rtol=1e-6)


def test_mae_recon_has_no_placebo():
    model = small_model("vit", "ce_pseudo")
    model.spec = {**model.spec, "objective": "mae_recon"}
    with pytest.raises(ValueError, match=r"placebo gradients are not defined for objective mae_recon"):
        Placebos(model, 2)
