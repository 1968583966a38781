"""What a user meets when loading: unreadable weights files and demo models given a file are named errors, and an
input_size override resizes a ViT's position embeddings as timm itself does."""

from __future__ import annotations

import pytest
import timm
import torch
from helpers.models import small_model
from safetensors.torch import save_file

from gradbrain.models.catalogue import model_spec
from gradbrain.models.load import load_model


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_weights_file_of_random_bytes_names_the_file_and_the_key(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).byte().numpy().tobytes()
    )
    with pytest.raises(ValueError, match=rf"models\.vit\.weights\.file: {path} is not a readable .*download it again"):
        small_model("vit", weights={"demo": False, "file": str(path)})
    with pytest.raises(ValueError, match=rf"models\.clip\.weights\.file: {path} is not a readable"):
        small_model("clip", weights={"file": str(path)})


def test_a_weights_file_on_a_demo_model_is_an_error_that_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"models\.demo_vit: weights\.demo is true.*weights\.demo: false"):
        load_model(model_spec("demo_vit", {"weights": {"file": str(tmp_path / "w.pt")}}), str(tmp_path / "x.pt"))


def test_a_weights_file_that_is_not_a_state_dict_says_so(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds a list, not a state dict"):
        small_model("vit", weights={"demo": False, "file": str(tmp_path / "list.pt")})


@pytest.mark.parametrize("family", ["vit", "dinov3_rope"])
def test_input_size_resizes_the_position_embeddings_as_timm_does(tmp_path, family):
    """Weights saved at 32 px, loaded with input_size 48: the model runs at 48 px and its position embeddings are
    timm's own resampling of the saved ones (set_input_size; absolute embeddings bicubic, RoPE grid rebuilt)."""
    base = small_model(family, "ce_pseudo", input_size=32, kwargs={**_kwargs(family), "img_size": 32})
    save_file(base.module.state_dict(), str(tmp_path / "w.safetensors"))
    model = small_model(family, "ce_pseudo", input_size=48, kwargs={**_kwargs(family), "img_size": 32},
                        weights={"demo": False, "hub": None, "file": str(tmp_path / "w.safetensors")})  # fmt: skip
    assert model.preprocessing.input_size == 48 and tuple(model.module.patch_embed.img_size) == (48, 48)
    with torch.no_grad():
        out = model.module(torch.zeros(2, 3, 48, 48))
    assert out.shape[0] == 2
    if getattr(base.module, "pos_embed", None) is not None:
        expected = timm.layers.resample_abs_pos_embed(base.module.pos_embed, new_size=(6, 6), old_size=(4, 4),
                                                      num_prefix_tokens=base.module.num_prefix_tokens)  # fmt: skip
        torch.testing.assert_close(model.module.pos_embed, expected, rtol=0, atol=0)


def _kwargs(family: str) -> dict:
    return {"vit": {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2, "num_classes": 5},
            "dinov3_rope": {"depth": 2, "embed_dim": 64, "num_heads": 2, "num_classes": 7}}[family]  # fmt: skip
