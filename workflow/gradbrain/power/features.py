"""The power analysis' own stimuli and features: seeded crops, every layer's pooled activations, gradients and rule
kinds of one model in one zarr store, and the whitened driver features its planted brains read out."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gradbrain import store
from gradbrain.features.kinds import BASE_KINDS, is_placebo, placebo_key
from gradbrain.simulation import stimuli as sim_stimuli
from gradbrain.simulation.photos import PHOTOGRAPHS, crops


def extract_power_features(
    out: str | Path,
    model,
    n_images: int,
    image_size: int,
    seed: int,
    batch_size: int = 100,
    device: str = "cpu",
    kinds: Iterable[str] = BASE_KINDS,
    rule_seed: int = 0,
    sketch_size: int = 16,
    placebos: int = 0,
) -> Path:
    """Pooled features of every sampled layer on ``n_images`` seeded crops, one zarr store: activations, gradients,
    any learning-rule kind (its feedback matrices seeded by ``rule_seed``, as in the study's extraction) and
    ``placebos`` placebo gradients (seeded likewise)."""
    from gradbrain.features.extract import extract_arrays
    from gradbrain.features.objectives import make_objective

    images, _ = crops(int(n_images), int(image_size), seed=int(seed))
    arrays = extract_arrays(
        model,
        make_objective(model, names=list(PHOTOGRAPHS)),
        images,
        batch_size,
        device,
        kinds=tuple(kinds),
        rule_seed=int(rule_seed),
        sketch_size=int(sketch_size),
        placebos=int(placebos),
    )
    with store.atomic_group(out) as group:
        for kind, layers in arrays.items():
            for k, layer in enumerate(layers):
                store.write_array(group, f"{kind}/{k:02d}", layer.astype(np.float32))
        group.attrs.update(
            {
                "model": model.spec["name"],
                "depths": list(model.depths),
                "layers": list(model.layer_names),
                "n_images": int(n_images),
                "image_size": int(image_size),
                "seed": int(seed),
                "kinds": [k for k in arrays if not is_placebo(k)],
                "placebos": sum(map(is_placebo, arrays)),
            }
        )
    return Path(out)


def load_power_features(path: str | Path, n_images: int) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """Depths and, per kind, the first ``n_images`` rows of every layer's features."""
    group = store.open_group(path)
    if int(group.attrs["n_images"]) < n_images:
        raise ValueError(
            f"{path} has {group.attrs['n_images']} images, a cell asks for {n_images}: "
            "raise power.n_images' maximum or delete the store so power_features reruns"
        )
    depths = np.asarray(group.attrs["depths"], dtype=float)
    feats = {
        kind: [np.asarray(group[f"{kind}/{k:02d}"][:n_images], dtype=np.float32) for k in range(len(depths))]
        for kind in group.attrs["kinds"]
    }
    return depths, feats


def load_placebos(path: str | Path, n_images: int) -> list[list[np.ndarray]] | None:
    """The first ``n_images`` rows of every placebo gradient's layers (J lists over layers), or None without any."""
    group = store.open_group(path)
    count, layers = int(group.attrs.get("placebos", 0)), len(group.attrs["depths"])
    if not count:
        return None
    return [[np.asarray(group[f"{placebo_key(j)}/{k:02d}"][:n_images], dtype=np.float32) for k in range(layers)]
            for j in range(count)]  # fmt: skip


def make_drivers(
    features: dict[str, tuple[np.ndarray, dict[str, list[np.ndarray]]]], components: int | None
) -> list[sim_stimuli.DriverFeatures]:
    """Driver features as ``simulate_stimuli`` makes them: every layer's top ``components`` principal components,
    whitened (None: every component, the full-rank readouts of ``forward_full_rank``)."""
    out = []
    for name, (depths, feats) in features.items():
        white = {
            kind: [sim_stimuli.whiten(x, components or x.shape[1]) for x in layers] for kind, layers in feats.items()
        }
        out.append(
            sim_stimuli.DriverFeatures(name, depths, white.pop("activations"), white.pop("gradients"), extra=white)
        )
    return out
