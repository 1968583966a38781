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

ROOT = Path(__file__).resolve().parents[1]
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
from gradbrain.catalogue import model_spec
from gradbrain.models import load_model
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
    from gradbrain.catalogue import model_spec

    spec = model_spec("x", case["spec"])
    torch.manual_seed(len(case["file"]))
    if spec["source"] == "timm":
        import timm

        return timm.create_model(spec["arch"], **spec["kwargs"])
    import open_clip

    return open_clip.create_model(spec["arch"], force_quick_gelu=True, **spec["kwargs"])


def _write_hub_file(cache: Path, repo: str, filename: str, state: dict) -> None:
    folder = cache / ("models--" + repo.replace("/", "--"))
    snap = folder / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    if filename.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(snap / filename))
    else:
        torch.save(state, snap / filename)


def _load_offline(tmp_path: Path, cases: dict) -> dict:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "workflow")}
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        env.pop(key, None)
    res = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(cases)], env=env, capture_output=True, text=True, timeout=600
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
    cases["vit_file"] = {"spec": {**CASES["vit"]["spec"], "weights": {"file": str(tmp / "vit.pt")}},
                         "written": str(tmp / "vit.pt")}
    cases["clip_file"] = {"spec": {**CASES["clip"]["spec"], "weights": {"file": str(tmp / "clip.pt")},
                                   "quick_gelu": True}, "written": str(tmp / "clip.pt")}
    cases["vit_missing"] = {"spec": {**CASES["vit"]["spec"],
                                     "weights": {"hub": "timm/vit_tiny_patch16_224.augreg_in21k"}}}
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
