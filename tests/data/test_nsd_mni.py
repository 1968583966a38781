"""distance_v1 in MNI space through NSD's MNI-to-func1pt8 transform, on a tiny tree written in the real formats.

The transform is a known, non-rigid affine map from func voxels to 1-based MNI voxel coordinates with a few voxels
set to 9999 (no MNI location) or off the MNI grid; the expected distances are computed here independently, with
nibabel's apply_affine and scipy's cdist, from FSL's MNI152 1-mm affine written out literally.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr
from helpers.nsd import AFFINE, GRID, VISUAL, VISUAL_VOXELS, hemispheres
from scipy.spatial.distance import cdist

from gradbrain.data import prepare
from gradbrain.data.download.files import download_targets
from gradbrain.data.nsd.mni import MNI_AFFINE, mni_mm
from gradbrain.data.nsd.paths import mni_transform_path, required_files
from gradbrain.data.nsd.subject import load_subject
from gradbrain.data.nsd.write import (
    write_betas_session,
    write_expdesign,
    write_mni_transform,
    write_ncsnr,
    write_roi,
)

T = 12
VOXELS = {**VISUAL_VOXELS, (5, 3, 2): 7}  # a right hV4 voxel more
NO_MNI = [(1, 3, 1), (2, 1, 1)]  # 9999: a V2 voxel and a left V1 voxel
OFF_GRID = (4, 4, 3)  # third coordinate below 1
ROIS = {"prf-visualrois": "all"}
FSL_MNI152_1MM = np.array([[-1, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]], dtype=float)


def _to_mni(flip: bool = False) -> np.ndarray:
    """Non-rigid map of 0-based func voxels to 1-based MNI voxels; left voxels (i < 3) land at MNI x < 0, i.e.
    first coordinate > 91 on the RPI grid (or the reverse with ``flip``)."""
    sign = 1.0 if flip else -1.0
    return np.array([[2.0 * sign, 0.3, 0, 96 - 10 * flip], [0, 1.5, 0.5, 60], [0.2, 0, 1.2, 40], [0, 0, 0, 1]])


def _coords(flip: bool = False) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*map(np.arange, GRID), indexing="ij"), axis=-1).reshape(-1, 3)
    coords = nib.affines.apply_affine(_to_mni(flip), ijk).reshape(*GRID, 3)
    for v in NO_MNI:
        coords[v] = 9999.0
    coords[OFF_GRID][2] = 0.2
    return coords.astype(np.float32).astype(np.float64)  # what the float32 file holds


def _write_tree(root: Path, flip: bool = False, transform: bool = True) -> np.ndarray:
    rng = np.random.default_rng(1)
    write_expdesign(root, rng.permutation(np.repeat(np.arange(1, 13), 3))[:T], np.tile(np.arange(1, 13), (8, 1)), [1])
    vol = np.zeros(GRID, dtype=int)
    for ijk, label in VOXELS.items():
        vol[ijk] = label
    write_roi(root, 1, "prf-visualrois", vol, VISUAL, AFFINE, hemispheres(vol))
    write_ncsnr(root, 1, rng.uniform(0.1, 1.5, GRID), AFFINE)
    write_betas_session(root, 1, 1, rng.normal(size=GRID + (T,)), AFFINE)
    coords = _coords(flip)
    if transform:
        write_mni_transform(root, 1, coords, AFFINE)
    return coords


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("nsd_mni")
    return root, _write_tree(root)


def _expected(coords: np.ndarray) -> dict[tuple[int, int, int], float]:
    """Distance of every voxel with an MNI location from its hemisphere's V1 centroid over V1 voxels with one."""
    located = [v for v in VOXELS if v not in NO_MNI and v != OFF_GRID]
    mm = {v: nib.affines.apply_affine(FSL_MNI152_1MM, coords[v] - 1) for v in located}
    out = {}
    for left in (True, False):
        side = [v for v in located if (v[0] < 3) == left]
        centre = np.mean([mm[v] for v in side if VOXELS[v] in (1, 2)], axis=0)
        dist = cdist(np.array([mm[v] for v in side]), centre[None])[:, 0]
        out.update(zip(side, dist, strict=True))
    return out


def test_mni_affine_is_nsd_rpi_grid():
    # NSD's code: MNI voxel (91, 127, 73), 1-based on the RPI grid, is the origin; its LPI output flips axis 1
    # (182 voxels) and sets the 0-based origin to (183 - 91, 127, 73) - 1 with 1-mm voxels
    np.testing.assert_allclose(nib.affines.apply_affine(MNI_AFFINE, [90, 126, 72]), 0)
    np.testing.assert_allclose(MNI_AFFINE, FSL_MNI152_1MM)
    lpi = np.array([[1, 0, 0, -91], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]], dtype=float)
    rpi = np.array([[0, 0, 0], [181, 217, 181], [10, 50, 100]])
    flipped = rpi * [-1, 1, 1] + [181, 0, 0]
    np.testing.assert_allclose(nib.affines.apply_affine(MNI_AFFINE, rpi), nib.affines.apply_affine(lpi, flipped))


def test_mni_mm_reads_1_based_coordinates_and_marks_the_invalid():
    values = [[91, 127, 73], [1, 1, 1], [182, 218, 182], [0.5, 100, 100], [9999, 9999, 9999], [np.nan, 1, 1]]
    transform = np.array(values, dtype=float).reshape(1, 6, 1, 3)
    mm = mni_mm(transform, (np.zeros(6, int), np.arange(6), np.zeros(6, int)))
    np.testing.assert_allclose(mm[:3], [[0, 0, 0], [90, -126, -72], [-91, 91, 109]])
    assert np.isnan(mm[3:]).all()


def test_writer_keeps_the_real_layout(tree):
    root, coords = tree
    img = nib.load(mni_transform_path(root, 1))
    assert img.shape == GRID + (3,)
    np.testing.assert_allclose(img.get_fdata(), coords)
    assert (img.get_fdata()[NO_MNI[0]] == 9999).all()
    np.testing.assert_allclose(img.affine, AFFINE)
    with pytest.raises(ValueError, match="X, Y, Z, 3"):
        write_mni_transform(root, 2, coords[..., :2], AFFINE)


def test_distances_in_mni_space(tree, caplog):
    root, coords = tree
    with caplog.at_level(logging.WARNING):
        vox = load_subject(root, 1, 1, ROIS, distance_space="mni", log=lambda m: None).voxels
    expected = _expected(coords)
    got = {
        tuple(ijk): d for ijk, d in zip(vox[["i", "j", "k"]].itertuples(index=False), vox["distance_v1"], strict=True)
    }
    assert set(got) == set(expected)
    np.testing.assert_allclose([got[v] for v in expected], list(expected.values()), rtol=1e-6)
    assert "dropped 3 of 12 selected voxels that have no MNI location" in caplog.text
    assert "1 of 4 lh V1 voxels" in caplog.text
    assert "wrong side" not in caplog.text
    native = load_subject(root, 1, 1, ROIS, log=lambda m: None).voxels
    assert len(native) == len(VOXELS)
    same = native.merge(vox, on=["i", "j", "k"], suffixes=("_native", "_mni"))
    assert not np.allclose(same["distance_v1_native"], same["distance_v1_mni"], rtol=1e-3)
    np.testing.assert_allclose(
        same[["x_mm_native", "y_mm_native", "z_mm_native"]], same[["x_mm_mni", "y_mm_mni", "z_mm_mni"]]
    )


def test_each_hemisphere_uses_its_own_centroid(tree):
    root, coords = tree
    vox = load_subject(root, 1, 1, ROIS, distance_space="mni", log=lambda m: None).voxels
    lh = vox[vox["hemi"] == "lh"]
    rh_v1 = [v for v in VOXELS if v[0] >= 3 and VOXELS[v] in (1, 2) and v != OFF_GRID]
    rh_centre = nib.affines.apply_affine(FSL_MNI152_1MM, np.array([coords[v] for v in rh_v1]) - 1).mean(axis=0)
    mm = nib.affines.apply_affine(FSL_MNI152_1MM, coords[tuple(lh[["i", "j", "k"]].to_numpy().T)] - 1)
    assert not np.allclose(lh["distance_v1"], cdist(mm, rh_centre[None])[:, 0])
    assert (rh_centre[0] > 0) and (mm[:, 0] < 0).all()


def test_flipped_transform_warns(tmp_path, caplog):
    _write_tree(tmp_path, flip=True)
    with caplog.at_level(logging.WARNING):
        load_subject(tmp_path, 1, 1, ROIS, distance_space="mni", log=lambda m: None)
    assert "MNI V1 centroid of lh and rh lies on the wrong side" in caplog.text


def test_missing_or_misshapen_transform(tmp_path):
    _write_tree(tmp_path, transform=False)
    with pytest.raises(FileNotFoundError, match="MNI-to-func1pt8.nii.gz.*distance_space: native"):
        load_subject(tmp_path, 1, 1, ROIS, distance_space="mni")
    write_mni_transform(tmp_path, 1, np.ones((6, 5, 3, 3)), AFFINE)
    with pytest.raises(ValueError, match=r"expected \(6, 5, 4, 3\)"):
        load_subject(tmp_path, 1, 1, ROIS, distance_space="mni")
    write_mni_transform(tmp_path, 1, np.full(GRID + (3,), 9999.0), AFFINE)
    with pytest.raises(ValueError, match="no selected voxel has an MNI location"):
        load_subject(tmp_path, 1, 1, ROIS, distance_space="mni")


def test_required_files_and_inputs_list_the_transform():
    assert "nsddata/ppdata/subj03/transforms/MNI-to-func1pt8.nii.gz" in required_files(3, 2, [], distance_space="mni")
    assert "nsddata/ppdata/subj03/transforms/MNI-to-func1pt0.nii.gz" in required_files(
        3, 2, [], space="func1mm", distance_space="mni"
    )
    assert not any("transforms" in f for f in required_files(3, 2, []))
    dataset = {
        "name": "nsd",
        "format": "nsd",
        "root": "data/nsd",
        "sessions": {3: 1},
        "rois": ROIS,
        "beta_format": "hdf5",
        "space": "func1pt8mm",
        "beta_version": "betas_fithrf_GLMdenoise_RR",
    }
    assert "data/nsd/nsddata/ppdata/subj03/transforms/MNI-to-func1pt8.nii.gz" not in download_targets(dataset, 3)
    dataset["distance_space"] = "mni"
    assert "data/nsd/nsddata/ppdata/subj03/transforms/MNI-to-func1pt8.nii.gz" in download_targets(dataset, 3)
    with pytest.raises(ValueError, match="datasets.nsd.distance_space: mni is not available with space 'fsaverage'"):
        download_targets({**dataset, "space": "fsaverage"}, 3)
    with pytest.raises(ValueError, match="datasets.nsd.distance_space: unknown value 'talairach'"):
        download_targets({**dataset, "distance_space": "talairach"}, 3)


def test_fsaverage_unknown_and_simulated_are_errors(tmp_path):
    with pytest.raises(ValueError, match="distance_space: mni is not available with space 'fsaverage'"):
        load_subject(tmp_path, 1, 1, ROIS, space="fsaverage", distance_space="mni")
    with pytest.raises(ValueError, match="distance_space: unknown value 'MNI'"):
        load_subject(tmp_path, 1, 1, ROIS, distance_space="MNI")
    with pytest.raises(ValueError, match="datasets.sim.distance_space: mni needs NSD's MNI transforms"):
        prepare.distance_space_of({"name": "sim", "simulated": "backprop", "distance_space": "mni"})
    assert prepare.distance_space_of({"name": "nsd"}) == "native"


def test_prepare_stores_mni_distances(tree, tmp_path):
    root, coords = tree
    dataset = {"name": "nsd", "format": "nsd", "root": str(root), "sessions": {1: 1}, "rois": ROIS}
    out = prepare.prepare_fmri({**dataset, "distance_space": "mni", "trials_per_session": T}, 1, tmp_path / "f.zarr")
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["distance_space"] == "mni"
    ijk = [tuple(v) for v in np.asarray(group["targets/ijk"])]
    expected = _expected(coords)
    np.testing.assert_allclose(np.asarray(group["targets/distance_v1"]), [expected[v] for v in ijk], rtol=1e-5)
