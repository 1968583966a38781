"""Weights load for real from a Hugging Face hub cache in offline mode, or from a file; a miss says how to fetch.

The test writes random-init weights of small architectures in the hub cache layout that `hf download` produces
(models--<org>--<repo>/snapshots/<commit>/<file>, refs/main), then a fresh Python process with HF_HOME pointed at it
and HF_HUB_OFFLINE=1 loads them through models.load_model, i.e. through timm's and open_clip's own pretrained
loaders with the catalogue's real hub ids and tags, and compares every tensor with the one written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO

ROOT = REPO
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# Small stand-ins: the catalogue entry's source and path, a real hub id or tag, small builder kwargs.
CLIP_KW = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CASES = {
    "vit": {
        "spec": {"catalogue": "vit_l16", "arch": "vit_tiny_patch16_224", "n_layers": 2,
                 "kwargs": {"img_size": 32, "depth": 2},
                 "weights": {"hub": "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"}},
        "file": "model.safetensors",
    },
    "dinov3": {
        "spec": {"catalogue": "dinov3_vitl16", "arch": "vit_small_patch16_dinov3", "n_layers": 2,
                 "kwargs": {"img_size": 32, "depth": 2}, "weights": {"hub": "timm/vit_small_patch16_dinov3.lvd1689m"}},
        "file": "model.safetensors",
    },
    "resnet": {  # only the legacy pytorch_model.bin in the cache: timm falls back to it
        "spec": {"catalogue": "resnet50", "arch": "resnet18", "weights": {"hub": "timm/resnet18.a1_in1k"}},
        "file": "pytorch_model.bin",
    },
    "clip": {  # the real OpenAI tag of ViT-B-32: its hub repo, its QuickGELU, its preprocessing
        "spec": {"catalogue": "owlvit_b32", "weights": {"hub": "openai"}, "n_blocks": 2, "kwargs": CLIP_KW},
        "repo": "timm/vit_base_patch32_clip_224.openai",
        "file": "open_clip_model.safetensors",
    },
}  # fmt: skip

LOADER = r"""
import json, sys, torch
from huggingface_hub import constants
from gradbrain.models.catalogue import model_spec
from gradbrain.models.load import load_model
cases = json.loads(sys.argv[1])
out = {"offline": constants.HF_HUB_OFFLINE, "cache": constants.HF_HUB_CACHE}
for name, case in cases.items():
    try:
        m = load_model(model_spec(name, case["spec"]))
    except Exception as err:
        out[name] = {"error": type(err).__name__, "message": str(err)}
        continue
    written = torch.load(case["written"], weights_only=True)
    state = m.module.state_dict()
    out[name] = {
        "keys_equal": sorted(state) == sorted(written),
        "max_abs_diff": max(float((state[k].float() - written[k].float()).abs().max()) for k in written),
        "weights_id": m.weights_id,
        "preprocessing": m.preprocessing.as_dict(),
        "n_blocks": len(m.blocks),
        "modules": sorted({type(x).__name__ for x in m.module.modules()}),
        "training": any(x.training for x in m.module.modules()),
    }
print(json.dumps(out))
"""


def _build(case: dict) -> torch.nn.Module:
    from gradbrain.models.catalogue import model_spec

    spec = model_spec("x", case["spec"])
    torch.manual_seed(len(case["file"]))
    if spec["source"] == "timm":
        import timm

        return timm.create_model(spec["arch"], **spec["kwargs"])
    import open_clip

    return open_clip.create_model(spec["arch"], force_quick_gelu=True, **spec["kwargs"])


def _snapshot(cache: Path, repo: str) -> Path:
    """The snapshot folder of ``repo`` in the hub cache layout, with refs/main naming it."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    snap = folder / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    return snap


def _write_hub_file(cache: Path, repo: str, filename: str, state: dict) -> None:
    snap = _snapshot(cache, repo)
    if filename.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(snap / filename))
    else:
        torch.save(state, snap / filename)


def _load_offline(tmp_path: Path, cases: dict, script: str = LOADER) -> dict:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "workflow")}
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        env.pop(key, None)
    res = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases)], env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("weights")
    cache = tmp / "hf" / "hub"
    cases = {}
    for name, case in CASES.items():
        state = {k: v.clone() for k, v in _build(case).state_dict().items()}
        repo = case.get("repo", case["spec"]["weights"]["hub"])
        _write_hub_file(cache, repo, case["file"], state)
        torch.save(state, tmp / f"{name}.pt")
        cases[name] = {"spec": case["spec"], "written": str(tmp / f"{name}.pt")}
    # weights given as files (timm and open_clip), and hub weights that are not in the cache
    cases["vit_file"] = {
        "spec": {**CASES["vit"]["spec"], "weights": {"file": str(tmp / "vit.pt")}},
        "written": str(tmp / "vit.pt"),
    }
    cases["clip_file"] = {
        "spec": {**CASES["clip"]["spec"], "weights": {"file": str(tmp / "clip.pt")}, "quick_gelu": True},
        "written": str(tmp / "clip.pt"),
    }
    cases["vit_missing"] = {
        "spec": {**CASES["vit"]["spec"], "weights": {"hub": "timm/vit_tiny_patch16_224.augreg_in21k"}}
    }
    cases["clip_missing"] = {"spec": {**CASES["clip"]["spec"], "weights": {"hub": "laion2b_s34b_b79k"}}}
    return _load_offline(tmp, cases), cache  # fmt: skip


@pytest.mark.parametrize("name", ["vit", "dinov3", "resnet", "clip", "vit_file", "clip_file"])
def test_weights_load_offline_and_equal_the_written_tensors(loaded, name):
    out, cache = loaded
    assert out["offline"] and Path(out["cache"]) == cache
    got = out[name]
    assert "error" not in got, got
    assert got["keys_equal"] and got["max_abs_diff"] == 0.0
    assert not got["training"], "loaded models are in eval mode"
    source = "file:" if name.endswith("_file") else ("open_clip:" if name == "clip" else "hf-hub:timm/")
    assert got["weights_id"].startswith(source)


def test_data_config_and_quick_gelu_follow_the_pretrained_tag(loaded):
    out, _ = loaded
    assert out["vit"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]  # the augreg tag's own normalisation
    assert out["vit"]["preprocessing"]["crop_pct"] == 0.9
    assert out["resnet"]["preprocessing"]["crop_pct"] == 0.95  # resnet18.a1_in1k
    assert out["clip"]["preprocessing"]["mean"][0] == pytest.approx(0.48145466)  # OpenAI CLIP
    assert "QuickGELU" in out["clip"]["modules"], "the openai tag was trained with QuickGELU"
    assert out["dinov3"]["n_blocks"] == 2 and "RotaryEmbeddingDinoV3" in out["dinov3"]["modules"]


@pytest.mark.parametrize(
    "name, repo, files",
    [
        ("vit_missing", "timm/vit_tiny_patch16_224.augreg_in21k", "model.safetensors or pytorch_model.bin"),
        ("clip_missing", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_pytorch_model.bin"),
    ],
)
def test_missing_weights_say_which_where_and_how_to_fetch(loaded, name, repo, files):
    out, cache = loaded
    got = out[name]
    assert got["error"] == "WeightsNotFoundError"
    msg = got["message"]
    assert f"model {name}" in msg and files in msg  # which weights
    assert str(cache / ("models--" + repo.replace("/", "--"))) in msg and "HF_HUB_OFFLINE=1" in msg  # where
    assert f"hf download {repo}" in msg and f"models.{name}.weights.file" in msg  # how to fetch


# OWL-ViT: a transformers checkpoint (google/owlvit-base-patch32's layout) converted to open_clip's ViT-B-32.
OWL_REPO = "google/owlvit-base-patch32"
OWL_HF = {  # a small OwlViTConfig: 2 blocks per tower, 64 px images in 16 px patches, text context 16
    "text_config": {
        "hidden_size": 32,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
    },
    "vision_config": {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 64,
        "patch_size": 16,
    },
    "projection_dim": 24,
}
OWL_KW = {  # the same sizes as an open_clip ViT-B-32 config
    "embed_dim": 24,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
OWL_SPEC = {"catalogue": "owlvit_b32", "n_blocks": 2, "n_layers": 2, "kwargs": OWL_KW}
# the checkpoint's own preprocessor_config.json format (size and mean differ from OWL-ViT's to show they are read)
OWL_PREPROCESSOR = {"do_resize": True, "size": 64, "resample": 3, "do_center_crop": True, "crop_size": 64,
                    "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}  # fmt: skip
OWL_NAMES = ["cat", "aardvark", "ice_cream", " ".join(["very"] * 20) + " long name"]  # the last one is truncated

OWL_LOADER = r"""
import copy, json, sys, torch
from pathlib import Path
from transformers import OwlViTForObjectDetection
from gradbrain.features import objectives
from gradbrain.features.objectives import zeroshot
from gradbrain.models import owlvit
from gradbrain.models.catalogue import model_spec
from gradbrain.models.load import load_model
from gradbrain.models.weights import load_state_dict
cases = json.loads(sys.argv[1])
out = {}
for name, case in cases.items():
    try:
        m = load_model(model_spec(name, case["spec"]))
    except Exception as err:
        out[name] = {"error": type(err).__name__, "message": str(err)}
        continue
    got = {"weights_id": m.weights_id, "preprocessing": m.preprocessing.as_dict(), "n_blocks": len(m.blocks),
           "training": any(x.training for x in m.module.modules()),
           "state": {k: v.double().sum().item() for k, v in m.module.state_dict().items()}}
    if "reference" in case:  # transformers' own model of the same checkpoint
        ref = OwlViTForObjectDetection.from_pretrained(case["reference"]).owlvit.eval()
        x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        def blocks(module):
            outs = []
            hooks = [b.register_forward_hook(lambda mod, i, o: outs.append(o))
                     for b in module.visual.transformer.resblocks]
            with torch.no_grad():
                emb = module.encode_image(x)
            for h in hooks:
                h.remove()
            return outs, emb
        with torch.no_grad():
            r = ref.vision_model(pixel_values=x, output_hidden_states=True)
            ref_img = ref.get_image_features(pixel_values=x).pooler_output
            ids = zeroshot._tokenizer(m)(["a photo of a {}.".format(n.replace("_", " ")) for n in case["names"]])
            ref_txt = ref.get_text_features(input_ids=ids).pooler_output
            bank = zeroshot.text_bank(m, case["names"])
        acts, emb = blocks(m.module)
        assert all(b is a for a, b in zip(m.blocks, m.module.visual.transformer.resblocks))
        got["block_diff"] = [(a - h).abs().max().item() for a, h in zip(acts, r.hidden_states[1:])]
        got["n_hidden"] = len(r.hidden_states) - 1
        got["embed_diff"] = (m.embed(x) - ref_img).abs().max().item()
        got["embed_scale"] = ref_img.abs().max().item()
        got["text_diff"] = (bank - ref_txt).abs().max().item()
        got["text_scale"] = ref_txt.abs().max().item()
        got["token_ids"] = ids.tolist()
        obj = objectives.make_objective(m, case["names"])
        got["logit_scale"] = [obj.scale, ref.logit_scale.exp().item()]
        owlvit.QKV = ("k_proj", "q_proj", "v_proj")  # a wrong split of the fused attention projection
        wrong = copy.deepcopy(m.module)
        wrong.load_state_dict(owlvit.to_open_clip(load_state_dict(Path(case["checkpoint"]), "checkpoint")))
        owlvit.QKV = ("q_proj", "k_proj", "v_proj")
        got["wrong_qkv_block_diff"] = [(a - h).abs().max().item()
                                       for a, h in zip(blocks(wrong)[0], r.hidden_states[1:])]
    if "full_size" in case:
        img = torch.randn(1, 3, m.preprocessing.input_size, m.preprocessing.input_size)
        with torch.no_grad():
            got["embed_shape"] = list(m.embed(img).shape)
            got["bank_shape"] = list(zeroshot.text_bank(m, ["cat", "dog"]).shape)
        got["pos"] = [list(m.module.visual.positional_embedding.shape), list(m.module.positional_embedding.shape)]
        got["context_length"] = m.module.context_length
    out[name] = got
print(json.dumps(out))
"""


def _owl_sums(state: dict) -> dict[str, float]:
    """Each tensor's sum in open_clip's names, computed from the transformers names by hand (not by the converter)."""
    sd = {k.removeprefix("owlvit."): v.double() for k, v in state.items()}
    out = {"logit_scale": sd["logit_scale"].sum().item()}
    for tower, prefix in (("vision_model.", "visual."), ("text_model.", "")):
        for i in range(2):
            hf, oc = f"{tower}encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
            for kind in ("weight", "bias"):
                out[f"{oc}attn.in_proj_{kind}"] = sum(sd[f"{hf}self_attn.{p}_proj.{kind}"].sum().item() for p in "qkv")
                for a, b in (
                    ("layer_norm1", "ln_1"),
                    ("layer_norm2", "ln_2"),
                    ("self_attn.out_proj", "attn.out_proj"),
                    ("mlp.fc1", "mlp.c_fc"),
                    ("mlp.fc2", "mlp.c_proj"),
                ):
                    out[f"{oc}{b}.{kind}"] = sd[f"{hf}{a}.{kind}"].sum().item()
    return out  # fmt: skip


@pytest.fixture(scope="module")
def owl(tmp_path_factory):
    """A small random OWL-ViT written by transformers' save_pretrained into the hub cache layout, loaded offline."""
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTModel

    tmp = tmp_path_factory.mktemp("owl")
    torch.manual_seed(0)
    det = OwlViTForObjectDetection(OwlViTConfig(**OWL_HF)).eval()
    with torch.no_grad():  # move every tensor off its init value (layer norms start at 1 and 0)
        for p in det.parameters():
            p.add_(0.1 * torch.randn_like(p))
    snap = _snapshot(tmp / "hf" / "hub", OWL_REPO)
    det.save_pretrained(snap)
    (snap / "preprocessor_config.json").write_text(json.dumps(OWL_PREPROCESSOR))
    model_only = OwlViTModel(det.config)  # weights.file: the OwlViTModel layout (no `owlvit.` prefix, no heads)
    model_only.load_state_dict(det.owlvit.state_dict())
    torch.save(model_only.state_dict(), tmp / "owlvit_model.bin")
    cases = {
        "owl": {"spec": OWL_SPEC, "reference": str(snap), "checkpoint": str(snap / "model.safetensors"),
                "names": OWL_NAMES},
        "owl_file": {"spec": {**OWL_SPEC, "weights": {"file": str(tmp / "owlvit_model.bin")}}},
        "owl_missing": {"spec": {**OWL_SPEC, "weights": {"hub": "google/owlvit-base-patch16"}}},
        "owl_unfit": {"spec": {**OWL_SPEC, "kwargs": {**OWL_KW, "vision_cfg": {**OWL_KW["vision_cfg"],
                                                                              "image_size": 32}}}},
    }  # fmt: skip
    return _load_offline(tmp, cases, OWL_LOADER), _owl_sums(det.state_dict()), tmp / "hf" / "hub", det.state_dict()


def test_owlvit_checkpoint_is_the_hub_layout(owl):
    *_, state = owl
    assert any(k.startswith("class_head.") for k in state) and any(k.startswith("owlvit.vision_model.") for k in state)


def test_owlvit_image_tower_equals_transformers_block_by_block(owl):
    out, *_ = owl
    got = out["owl"]
    assert "error" not in got, got
    assert got["weights_id"] == f"hf-hub:{OWL_REPO}" and got["n_blocks"] == got["n_hidden"] == 2
    assert not got["training"]
    assert max(got["block_diff"]) < 1e-5 and got["embed_diff"] < 1e-5 * max(1.0, got["embed_scale"])
    # the test can fail: q and k swapped in the fused projection change every block's output
    assert min(got["wrong_qkv_block_diff"]) > 1e-3


def test_owlvit_text_bank_equals_transformers_text_features(owl):
    out, *_ = owl
    got = out["owl"]
    assert got["text_diff"] < 1e-5 * max(1.0, got["text_scale"])
    ids = got["token_ids"]
    assert all(len(row) == 16 for row in ids), "OWL-ViT's text context is 16 tokens"
    assert ids[-1][-1] == 49407 and 0 not in ids[-1], "a long prompt is cut to 16 tokens ending in end-of-text"
    assert got["logit_scale"][0] == pytest.approx(got["logit_scale"][1], rel=1e-6)


def test_owlvit_weights_and_preprocessing_come_from_the_checkpoint(owl):
    out, sums, *_ = owl
    hub, file = out["owl"], out["owl_file"]
    assert "error" not in file, file
    assert file["weights_id"] == "file:owlvit_model.bin"
    for key, value in sums.items():  # every converted block tensor holds the checkpoint's numbers
        assert hub["state"][key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    assert hub["state"] == file["state"], "the OwlViTModel file and the detection checkpoint give the same model"
    assert hub["preprocessing"] == {"input_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3, "crop_pct": 1.0,
                                    "interpolation": "bicubic", "resize_mode": "squash"}  # fmt: skip
    # no preprocessor_config.json next to the file: OWL-ViT's own defaults (OpenAI CLIP statistics, squash)
    assert file["preprocessing"]["mean"][0] == pytest.approx(0.48145466)
    assert file["preprocessing"]["resize_mode"] == "squash" and file["preprocessing"]["input_size"] == 64


def test_owlvit_missing_or_unfit_weights_say_what_to_do(owl):
    out, _, cache, _ = owl
    miss = out["owl_missing"]
    assert miss["error"] == "WeightsNotFoundError"
    msg = miss["message"]
    repo = "google/owlvit-base-patch16"
    assert "model.safetensors or pytorch_model.bin" in msg and str(cache / f"models--{repo.replace('/', '--')}") in msg
    assert f"hf download {repo}" in msg and "HF_HUB_OFFLINE=1" in msg and "models.owl_missing.weights.file" in msg
    unfit = out["owl_unfit"]
    assert unfit["error"] == "ValueError" and "force_image_size" in unfit["message"]
    assert "positional_embedding" in unfit["message"]


def test_owlvit_full_size_catalogue_entry_loads_from_the_hub_cache(tmp_path):
    """The real catalogue entry (768 px, context 16) on a random full-size checkpoint in the hub layout."""
    from safetensors.torch import save_file
    from transformers import OwlViTConfig, OwlViTForObjectDetection

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in OwlViTForObjectDetection(OwlViTConfig()).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {k: 0.02 * torch.randn(s, generator=gen) for k, s in shapes.items()}
    save_file(state, str(_snapshot(tmp_path / "hf" / "hub", OWL_REPO) / "model.safetensors"))
    got = _load_offline(tmp_path, {"owlvit_b32": {"spec": {}, "full_size": True}}, OWL_LOADER)["owlvit_b32"]
    assert "error" not in got, got
    assert got["n_blocks"] == 12 and got["pos"] == [[577, 768], [16, 512]] and got["context_length"] == 16
    assert got["preprocessing"]["input_size"] == 768 and got["preprocessing"]["resize_mode"] == "squash"
    assert got["embed_shape"] == [1, 512] and got["bank_shape"] == [2, 512]
    proj = state["owlvit.visual_projection.weight"].double().sum().item()
    assert got["state"]["visual.proj"] == pytest.approx(proj, rel=1e-6)
