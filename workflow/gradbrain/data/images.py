"""Image files of a dataset's image set as the models read them: RGB uint8 (n, H, W, 3)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np


def read_rgb(paths: Iterable[Path], size: int | None, label: str, hint: str, resize_hint: str) -> np.ndarray:
    """Load ``paths`` as RGB uint8 (n, H, W, 3), each resized to ``size`` x ``size`` (bicubic) when given; without
    ``size`` all must share one shape. A missing file names the path and ``hint`` (how to get the images); images of
    different shapes name ``resize_hint`` (how to resize them). ``label``: the image set's name in those errors."""
    from PIL import Image

    out = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{label} image not found: {path}. {hint}")
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None:
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            out.append(np.asarray(im, dtype=np.uint8))
    if not out:
        return np.zeros((0, size or 0, size or 0, 3), np.uint8)
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        raise ValueError(f"{label} images have different shapes {sorted(shapes)}; {resize_hint}")
    return np.stack(out)
