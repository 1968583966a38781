"""What real NSD files may hold that a tidy fixture does not: voxels near the midline that the lh./rh. ROI files
label in both hemispheres or in neither, and NaN noise-ceiling SNRs (docs/data-formats.md 1.8, 1.9)."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from helpers import realdata
from sklearn.tree import DecisionTreeClassifier

from gradbrain.data.nsd.paths import ncsnr_path, roi_path
from gradbrain.data.nsd.rois import midline
from gradbrain.data.nsd.subject import load_subject
from gradbrain.data.nsd.write import write_ncsnr, write_roi

ROIS = {"prf-visualrois": "all", "streams": "all"}
TRIALS = 20
QUIET = {"log": lambda m: None, "trials_per_session": TRIALS}


def _tree(root):
    realdata.build_nsd(root, n_sessions=2, trials=TRIALS)
    return root


def _volumes(root, atlas):
    return [np.asarray(nib.load(roi_path(root, 1, atlas, h)).dataobj).astype(int) for h in (None, "lh", "rh")]


def test_midline_is_the_best_separating_plane():
    rng = np.random.default_rng(0)
    x_lh, x_rh = rng.uniform(-40, -1, 200), rng.uniform(2, 40, 150)
    t, lh_below = midline(x_lh, x_rh)
    stump = DecisionTreeClassifier(max_depth=1).fit(np.r_[x_lh, x_rh][:, None], np.r_[np.zeros(200), np.ones(150)])
    assert lh_below and t == pytest.approx(stump.tree_.threshold[0])
    t_flipped, lh_below_flipped = midline(-x_lh, -x_rh)  # left hemisphere at positive x
    assert not lh_below_flipped and t_flipped == pytest.approx(-t)
    # overlapping sides: the cut after -1 leaves one voxel (lh at 1.5) on the wrong side, any other cut more
    assert midline([-3, -2, -1, 1.5], [-0.5, 1, 2, 3]) == (-0.75, True)
    with pytest.raises(ValueError, match="both sides"):
        midline([], [1.0, 2.0])


def test_midline_voxels_take_the_hemisphere_of_their_side(tmp_path, caplog):
    clean, mid = _tree(tmp_path / "clean"), _tree(tmp_path / "mid")
    combined, lh, rh = _volumes(mid, "prf-visualrois")
    both = tuple(np.argwhere((combined > 0) & (np.arange(6)[:, None, None] == 2))[0])  # left of the midline
    neither = tuple(np.argwhere((combined > 0) & (np.arange(6)[:, None, None] == 3))[0])  # right of it
    rh[both] = combined[both]
    rh[neither] = 0
    write_roi(mid, 1, "prf-visualrois", combined, realdata.VISUAL, realdata.AFFINE, {"lh": lh, "rh": rh})

    want = load_subject(clean, 1, 2, ROIS, **QUIET)
    with caplog.at_level(logging.WARNING, logger="gradbrain.data.nsd"):
        got = load_subject(mid, 1, 2, ROIS, **QUIET)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith(f"2 voxels labelled in {roi_path(mid, 1, 'prf-visualrois')}")
    assert "(1 lh, 1 rh)" in warned[0]
    pd.testing.assert_frame_equal(got.voxels, want.voxels)  # hemispheres, and the V1 centroids' distances
    np.testing.assert_array_equal(got.Y, want.Y)


def test_midline_needs_voxels_labelled_on_both_sides(tmp_path):
    root = _tree(tmp_path)
    combined, lh, _ = _volumes(root, "prf-visualrois")
    write_roi(root, 1, "prf-visualrois", combined, realdata.VISUAL, realdata.AFFINE, {"lh": lh, "rh": lh})
    with pytest.raises(ValueError, match="download them again") as err:
        load_subject(root, 1, 2, ROIS, **QUIET)
    assert str(roi_path(root, 1, "prf-visualrois", "rh")) in str(err.value)


def test_nan_noise_ceilings_are_kept_and_counted(tmp_path, caplog):
    root = _tree(tmp_path)
    clean = load_subject(root, 1, 2, ROIS, **QUIET)
    ncsnr = np.asarray(nib.load(ncsnr_path(root, 1)).dataobj, dtype=np.float32)
    nan_at = clean.voxels[["i", "j", "k"]].to_numpy()[[0, 3, 5]]
    ncsnr[tuple(nan_at.T)] = np.nan
    write_ncsnr(root, 1, ncsnr, realdata.AFFINE)

    with caplog.at_level(logging.WARNING, logger="gradbrain.data.nsd"):
        got = load_subject(root, 1, 2, ROIS, **QUIET)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and f"3 of {len(clean.voxels)} voxels" in warned[0]
    assert str(ncsnr_path(root, 1)) in warned[0]
    is_nan = np.zeros(len(clean.voxels), bool)
    is_nan[[0, 3, 5]] = True
    np.testing.assert_array_equal(got.voxels["noise_ceiling"].isna(), is_nan)
    np.testing.assert_allclose(got.voxels.loc[~is_nan, "noise_ceiling"], clean.voxels.loc[~is_nan, "noise_ceiling"])
    np.testing.assert_array_equal(got.Y, clean.Y)
