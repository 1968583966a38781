"""MNI coordinates (mm) of functional voxels from NSD's ``MNI-to-<func1pt8|func1pt0>.nii.gz`` transform.

The transform lies on the subject's functional grid (X, Y, Z, 3). Its three channels hold, per voxel, the decimal
voxel coordinate in NSD's MNI grid along that grid's three axes, 1-based (MATLAB's convention), and 9999 where the
voxel has no MNI location. NSD's MNI grid is FSL's 1-mm MNI152 template, 182 x 218 x 182 stored RPI (the first
voxel is the rightmost), so a 0-based grid coordinate c lies at ``MNI_AFFINE @ [c, 1]`` mm. Evidence and the
reasoning: docs/data-formats.md 1.11.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from gradbrain.data.nsd.paths import PathLike, mni_transform_path
from gradbrain.data.nsd.read import read_nifti

_LOG = logging.getLogger(__name__)

MNI_SHAPE = (182, 218, 182)
"""NSD's MNI grid: FSL's MNI152 1-mm template."""

MNI_AFFINE = np.array([[-1.0, 0.0, 0.0, 90.0], [0.0, 1.0, 0.0, -126.0], [0.0, 0.0, 1.0, -72.0], [0.0, 0.0, 0.0, 1.0]])
"""0-based voxel -> MNI mm of that grid: x = 90 - i, y = j - 126, z = k - 72 (1-based: origin at voxel 91, 127, 73)."""

INVALID = 9999.0
"""The transform's value at voxels without an MNI location."""


def read_mni_transform(root: PathLike, subject: int, space: str, grid: tuple[int, ...]) -> tuple[np.ndarray, Path]:
    """The subject's (X, Y, Z, 3) MNI transform as float64, checked against the betas' ``grid``, and its path."""
    path = mni_transform_path(root, subject, space)
    hint = (
        f"Download {mni_transform_path('.', subject, space).as_posix()} (the workflow lists it when "
        "distance_space is mni), or set the dataset's distance_space: native"
    )
    data, _, _ = read_nifti(path, "MNI transform", hint)
    data = np.asarray(data, dtype=np.float64)
    if data.shape != (*grid, 3):
        raise ValueError(
            f"{path} has shape {data.shape}; expected {(*grid, 3)} (the ROI files' grid and 3 MNI coordinates)"
        )
    return data, path


def mni_mm(transform: np.ndarray, ijk: tuple[np.ndarray, ...]) -> np.ndarray:
    """(n, 3) MNI mm of the voxels at index arrays ``ijk``; NaN rows where the transform holds no coordinate in the
    MNI grid (9999, non-finite, or outside 1..182 x 1..218 x 1..182)."""
    coords = transform[ijk]
    valid = np.isfinite(coords).all(axis=1) & ((coords >= 1) & (coords <= np.array(MNI_SHAPE))).all(axis=1)
    out = np.full(coords.shape, np.nan)
    out[valid] = nib.affines.apply_affine(MNI_AFFINE, coords[valid] - 1.0)
    return out


def check_sides(centroids: Mapping[str, np.ndarray], path: Path) -> None:
    """Warn when a V1 centroid lies on the wrong side of MNI's midline (lh at x >= 0, rh at x <= 0): the transform
    or its reading is then suspect (a left-right flip leaves the distances unchanged, not the sides)."""
    wrong = [h for h, c in centroids.items() if (c[0] >= 0 if h == "lh" else c[0] <= 0)]
    if wrong:
        _LOG.warning(
            "the MNI V1 centroid of %s lies on the wrong side of x = 0 (%s) through %s; check the file",
            " and ".join(wrong),
            ", ".join(f"{h} x = {centroids[h][0]:.1f} mm" for h in wrong),
            path,
        )
