"""Learning-rule kinds: each checked against an independent computation (features/rules.py, features/feedback.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import REPO
from helpers.models import array_reader, read_features, small_model
from torch import nn

from gradbrain.features import extract, feedback, objectives
from gradbrain.features import rules as learning_rules
from gradbrain.features.capture import Capture
from gradbrain.features.kinds import ALL_KINDS, RULE_KINDS, check_kinds
from gradbrain.simulation import scenarios
from gradbrain.simulation import stimuli as sim_stimuli

RULES = RULE_KINDS
ALL = ALL_KINDS


def _model(family: str, objective: str | None = None):
    """The small stand-ins of test_extract, with the batch norms' zero-initialised scales (timm's zero_init_last)
    drawn at random, so every convolution's weight gradient is non-zero."""
    model = small_model(family, objective)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for m in model.module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
    return model


def _inputs(model, n=4, seed=1):
    size = model.preprocessing.input_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _kinds(model, objective, x, rules=None):
    capture = Capture(model.sampled_blocks)
    try:
        if rules is None:
            return extract.batch_features(model, objective, x, torch.arange(len(x)), capture)
        with rules.attached():
            return extract.batch_features(model, objective, x, torch.arange(len(x)), capture, rules)
    finally:
        capture.remove()


# --------------------------------------------------------------------------------------- feedback alignment
@pytest.mark.parametrize("family", ["vit", "dinov3_rope", "resnet", "convnext"])
def test_feedback_through_the_weights_themselves_is_backprop(family):
    """With B = W every patched layer sends the error back as backprop does: FA and SS equal the gradients."""
    model = _model(family, "ssl_view" if family == "dinov3_rope" else "ce_pseudo")
    model.module.double()
    obj = objectives.make_objective(model, seed=3)
    x = _inputs(model)
    base = _kinds(model, obj, x)
    rules = learning_rules.RuleSet(model, ALL, make_feedback=lambda kind, w, name: w)
    out = _kinds(model, obj, x, rules)
    assert rules.summary["replaced"], "some layers were patched"
    for kind, ref in (
        ("activations", "activations"),
        ("gradients", "gradients"),
        ("feedback_alignment", "gradients"),
        ("sign_symmetry", "gradients"),
    ):
        for a, b in zip(out[kind], base[ref], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-10)
    if family != "dinov3_rope":  # its random init has layer scales of 1e-5 and no head: the residual path dominates
        random = _kinds(model, obj, x, learning_rules.RuleSet(model, ALL))
        assert not torch.allclose(random["feedback_alignment"][0], base["gradients"][0], rtol=1e-2), "B differs"


def test_feedback_alignment_matches_a_hand_written_backward():
    """Conv -> ReLU -> Linear, loss 0.5 |y|^2: dL/dx = convT((y B2) * relu'(a), B1) with the fixed random B's."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 6)).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    state = feedback.FeedbackState(seed=5)
    with feedback.feedback_layers(net, state) as summary:
        y = net(x)
        state.mode = "feedback_alignment"
        (gx,) = torch.autograd.grad(0.5 * (y**2).sum(), x)
    assert summary["replaced"] == ["0", "3"]
    b1 = feedback.feedback_matrix("feedback_alignment", net[0].weight, "0", 5)
    b2 = feedback.feedback_matrix("feedback_alignment", net[3].weight, "3", 5)
    assert b1.shape == net[0].weight.shape and torch.allclose(b1.norm(), net[0].weight.norm())
    a = net[0](x)
    expected = F.conv_transpose2d((y @ b2).view(2, 4, 5, 5) * (a > 0), b1, padding=1)
    torch.testing.assert_close(gx, expected, rtol=1e-10, atol=1e-12)
    assert "forward" not in net[0].__dict__, "the module's own forward is back"


def test_sign_symmetry_is_backprop_for_sign_valued_weights():
    """When every patched W is c * sign(W), sign(W) * mean|W| = W, so sign symmetry equals backprop."""
    model = _model("vit", "ce_pseudo")
    model.module.double()
    with torch.no_grad():
        for m in model.module.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                m.weight.copy_(torch.sign(m.weight) * m.weight.abs().mean())
    obj = objectives.make_objective(model)
    x = _inputs(model)
    base = _kinds(model, obj, x)
    out = _kinds(model, obj, x, learning_rules.RuleSet(model, ["activations", "gradients", "sign_symmetry"]))
    for a, b in zip(out["sign_symmetry"], base["gradients"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_feedback(batch_first):
    """Self-attention nn.MultiheadAttention (open_clip's ViTs): same forward, B = W gives backprop, cross-attention
    keeps its exact backward and is reported."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 2, batch_first=batch_first).double().eval()
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    t = x.shape[1] if batch_first else x.shape[0]
    mask = torch.randn(t, t, dtype=torch.float64)
    y0 = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
    (g0,) = torch.autograd.grad(y0.pow(2).sum(), x)
    identity = feedback.FeedbackState(make=lambda kind, w, name: w)
    with feedback.feedback_layers(mha, identity) as summary:
        y1, w1 = mha(x, x, x, attn_mask=mask)
        identity.mode = "feedback_alignment"
        (g1,) = torch.autograd.grad(y1.pow(2).sum(), x)
        other = torch.randn_like(x)
        mha(x, other, other)
    assert summary["replaced"] == [""] and identity.exact_calls == {""}
    torch.testing.assert_close(y1, y0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g1, g0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w1, mha(x, x, x, attn_mask=mask)[1], rtol=1e-10, atol=1e-12)
    fa = feedback.FeedbackState(seed=1)
    with feedback.feedback_layers(mha, fa):
        y2 = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        fa.mode = "feedback_alignment"
        (g2,) = torch.autograd.grad(y2.pow(2).sum(), x)
    assert not torch.allclose(g2, g0, rtol=1e-2)
    assert {k[1] for k in fa.cache} == {"in_proj", "out_proj"}


# ---------------------------------------------------------------------------------- direct feedback alignment
def _straight_through(block_out_scale: float):
    """A forward hook that leaves a block's output unchanged but adds scale * I to its backward."""

    def hook(module, inputs, output):
        return output + block_out_scale * (inputs[0] - inputs[0].detach())

    return hook


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_direct_feedback_alignment_ignores_the_backward_path(family):
    """DFA_l = pool(e R_l): right shapes, equal to e R_l from the logits' own gradient, and unchanged when the
    backward path below the output changes while the output does not (the gradients do change)."""
    model = _model(family, "ce_pseudo")
    model.module.double()
    obj = objectives.make_objective(model)
    x = _inputs(model, n=3)
    kinds = ["activations", "gradients", "direct_feedback_alignment"]
    rules = learning_rules.RuleSet(model, kinds, seed=2)
    out = _kinds(model, obj, x, rules)
    logits = model.logits(x).detach().requires_grad_(True)
    (e,) = torch.autograd.grad(F.cross_entropy(logits, logits.argmax(1), reduction="sum"), logits)
    for name, a, d in zip(model.layer_names, out["activations"], out["direct_feedback_alignment"], strict=True):
        assert d.shape == a.shape
        torch.testing.assert_close(d, e @ rules.dfa_matrix(name, e.shape[1], a.shape[1], e.device, e.dtype))
    middle = len(model.sampled_blocks) // 2 + 1  # a block whose input and output have the same shape
    handle = model.sampled_blocks[middle].register_forward_hook(_straight_through(3.0))
    try:  # registered before the extraction's own hooks, so they see the altered output
        changed = _kinds(model, obj, x, learning_rules.RuleSet(model, kinds, seed=2))
    finally:
        handle.remove()
    for kind in ("activations", "direct_feedback_alignment"):
        for a, b in zip(out[kind], changed[kind], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(out["gradients"][middle - 1], changed["gradients"][middle - 1], rtol=1e-3)


# ------------------------------------------------------------------------------------------ weight gradients
def _exact_weight_gradients(model, obj, x, module) -> torch.Tensor:
    """Per-image dL_i/dW of ``module`` by autograd, one image at a time, flattened to (n, out, in*kh*kw)."""
    out = []
    module.weight.requires_grad_(True)
    try:
        for i in range(len(x)):
            loss = obj(model, x[i : i + 1], torch.tensor([i])).sum()
            (g,) = torch.autograd.grad(loss, module.weight)
            out.append(g.reshape(g.shape[0], -1))
    finally:
        module.weight.requires_grad_(False)
    return torch.stack(out)


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_weight_gradient_sketch_is_a_projection_of_the_exact_gradient(family):
    """The sketch equals S1 (dL_i/dW) S2^T, dL_i/dW from autograd on image i alone (linear and conv layers)."""
    model = _model(family, "ce_pseudo")
    model.module.double()
    obj = objectives.make_objective(model)
    x = _inputs(model, n=3)
    rules = learning_rules.RuleSet(model, ["activations", "gradients", "weight_gradient_sketch"], sketch_size=5)
    out = _kinds(model, obj, x, rules)["weight_gradient_sketch"]
    for k in (0, len(out) - 1):
        name, module, s1, s2 = rules._sketch_mods[k]
        assert name.endswith({"vit": "mlp.fc2", "resnet": "conv2"}[family])
        g = _exact_weight_gradients(model, obj, x, module)
        assert float(g.flatten(1).abs().sum(1).min()) > 0, "every image has a weight gradient"
        expected = (s1.double() @ g @ s2.double().reshape(5, -1).T).flatten(1)
        assert out[k].shape == (3, 25)
        torch.testing.assert_close(out[k], expected, rtol=1e-6, atol=1e-12)


def test_sketched_inner_products_match_exact_ones_in_expectation():
    """Over independent sketches, the mean of <sketch(G_i), sketch(G_j)> is <G_i, G_j> within 4 standard errors,
    for the projections the extraction draws (N(0, 1/k) entries, seeded)."""
    model = _model("resnet", "ce_pseudo")
    model.module.double()
    obj = objectives.make_objective(model)
    x = _inputs(model, n=3)
    name, module = learning_rules.sketch_module(model.sampled_blocks[2])
    g = _exact_weight_gradients(model, obj, x, module)  # (3, out, in*9)
    k, n_sketches = 6, 400
    products = []
    for seed in range(n_sketches):
        s1, s2 = learning_rules.sketch_matrices(name, module, k, seed)
        sk = s1.double() @ g @ s2.double().reshape(k, -1).T
        products.append([float((sk[i] * sk[j]).sum()) for i, j in ((0, 0), (0, 1), (1, 2))])
    products = np.asarray(products)
    exact = np.array([float((g[i] * g[j]).sum()) for i, j in ((0, 0), (0, 1), (1, 2))])
    se = products.std(0, ddof=1) / np.sqrt(n_sketches)
    assert np.all(np.abs(products.mean(0) - exact) <= 4 * se), (products.mean(0), exact, se)
    assert np.all(se < np.abs(exact)), "the check has power: the standard error is below the size of the products"


# --------------------------------------------------------------------------------------------- every kind
@pytest.mark.parametrize(
    ("family", "objective"),
    [
        ("vit", "ce_pseudo"),
        ("vit", "ssl_view"),
        ("dinov3_rope", "ssl_view"),
        ("resnet", "ce_pseudo"),
        ("convnext", "ce_pseudo"),
    ],
)
def test_every_kind_batched_equals_one_image(family, objective):
    model = _model(family, objective)
    model.module.double()
    state = copy.deepcopy(model.module.state_dict())
    obj = objectives.make_objective(model, seed=3)
    x = _inputs(model, n=4)
    rules = learning_rules.RuleSet(model, ALL, seed=1, sketch_size=4)
    capture = Capture(model.sampled_blocks)
    try:
        with rules.attached():
            full = extract.batch_features(model, obj, x, torch.arange(4), capture, rules)
            for i in range(4):
                one = extract.batch_features(model, obj, x[i : i + 1], torch.tensor([i]), capture, rules)
                for kind in ALL:
                    for a, b in zip(full[kind], one[kind], strict=True):
                        torch.testing.assert_close(a[i : i + 1], b, rtol=1e-5, atol=1e-10)
    finally:
        capture.remove()
    assert list(full) == list(ALL)
    for kind in RULES:
        assert all(float(v.abs().sum()) > 0 for v in full[kind]), f"{kind}: every sampled layer gets a signal"
    assert not model.module.training, "eval mode holds"
    assert not any("forward" in m.__dict__ for m in model.module.modules()), "module forwards are restored"
    assert "logits" not in model.__dict__ and "embed" not in model.__dict__
    for key, value in model.module.state_dict().items():
        assert torch.equal(value, state[key]), f"{key} changed"


def test_zarr_store_has_every_kind_and_resumes(tmp_path, monkeypatch):
    model = _model("resnet", "ce_pseudo")
    obj = objectives.make_objective(model)
    images = np.random.default_rng(0).integers(0, 255, size=(12, 40, 40, 3), dtype=np.uint8)
    ids = [str(i) for i in range(12)]
    kw = dict(batch_size=4, chunk_images=8, kinds=ALL, rule_seed=3, sketch_size=4)
    full = extract.extract_to_zarr(model, obj, array_reader(images), ids, tmp_path / "full.zarr", **kw)
    arrays = extract.extract_arrays(model, obj, images, batch_size=5, kinds=ALL, rule_seed=3, sketch_size=4)
    import zarr

    attrs = zarr.open_group(str(full)).attrs
    assert attrs["kinds"] == list(ALL) and attrs["rule_seed"] == 3 and attrs["sketch_size"] == 4
    assert attrs["sketch_modules"][0] == "layer1.0.conv2" and "fc" in attrs["feedback_modules"]
    for kind in ALL:
        stored = read_features(full, kind)
        for layer, values in zip(model.layer_names, arrays[kind], strict=True):
            np.testing.assert_allclose(stored[layer], values, rtol=1e-4, atol=1e-6 * np.abs(values).max())
    assert stored[model.layer_names[0]].shape == (12, 16)

    calls = {"n": 0}
    real = extract.batch_features

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # the dims probe, two batches (one complete chunk), then death
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(extract, "batch_features", dying)
    out = tmp_path / "resumed.zarr"
    with pytest.raises(KeyboardInterrupt):
        extract.extract_to_zarr(model, obj, array_reader(images), ids, out, **kw)
    assert not any("forward" in m.__dict__ for m in model.module.modules()), "restored after a failure too"
    monkeypatch.setattr(extract, "batch_features", real)
    extract.extract_to_zarr(model, obj, array_reader(images), ids, out, **kw)
    for kind in ALL:
        a, b = read_features(full, kind), read_features(out, kind)
        for layer in a:
            np.testing.assert_array_equal(a[layer], b[layer])


def test_default_kinds_take_the_plain_path():
    model = _model("resnet", "ce_pseudo")
    assert extract.make_rules(model) is None
    assert extract.make_rules(model, ["gradients", "activations"]) is None
    with pytest.raises(ValueError, match="must contain"):
        check_kinds(["activations", "feedback_alignment"])
    with pytest.raises(ValueError, match="unknown"):
        check_kinds(["activations", "gradients", "hebbian"])


def test_scenarios_name_the_kinds_their_drivers_need():
    assert scenarios.driver_kinds(["backprop", "misaligned"]) == ("activations", "gradients")
    assert scenarios.driver_kinds(["feedback_alignment", "backprop"]) == (
        "activations",
        "gradients",
        "feedback_alignment",
    )
    driver = sim_stimuli.DriverFeatures("m", np.zeros(1), [np.zeros((2, 1))], [np.zeros((2, 1))])
    with pytest.raises(KeyError, match="simulation.scenarios"):
        driver.features("feedback_alignment")


def test_schema_requires_activations_and_gradients():
    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    root = REPO
    schema = str(root / "workflow" / "schemas" / "config.schema.yaml")
    cfg = yaml.safe_load((root / "config" / "rules.yaml").read_text())
    validate(cfg, schema)
    assert cfg["extraction"]["sketch_size"] == 16 and "feedback_alignment" in cfg["simulation"]["scenarios"]
    for kinds in (["activations", "feedback_alignment"], ["activations", "gradients", "hebbian"]):
        cfg["extraction"]["kinds"] = kinds
        with pytest.raises(WorkflowError, match="kinds"):
            validate(cfg, schema)
