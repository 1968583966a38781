"""gradbrain.data.nsd on a tiny synthetic NSD tree written in the real formats (docs/data-formats.md section 5)."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io
from helpers.nsd import AFFINE, GRID, VISUAL, VISUAL_VOXELS, hemispheres

from gradbrain.data.nsd.paths import (
    FUNC1PT8MM_GRID,
    HEMIS,
    betas_path,
    ctab_path,
    expdesign_path,
    fsaverage_betas_path,
    ncsnr_path,
    required_files,
    roi_path,
    stim_info_path,
)
from gradbrain.data.nsd.read import NSDFileError, noise_ceiling, read_expdesign, read_images, stimulus_ids, trial_table
from gradbrain.data.nsd.rois import read_ctab
from gradbrain.data.nsd.subject import load_subject
from gradbrain.data.nsd.write import (
    write_betas_session,
    write_betas_session_fsaverage,
    write_expdesign,
    write_fsaverage_roi,
    write_fsaverage_surface,
    write_image_brick,
    write_ncsnr,
    write_ncsnr_fsaverage,
    write_roi,
    write_stim_info,
)

T = 10  # trials per session in the fixture (750 in real NSD)
N_SES = 2
N_IMAGES = 30
M = 12  # images per subject (10,000 in real NSD)
SUBJECTS = {1: N_SES, 2: N_SES}
SHARED0 = np.array([3, 8, 15, 22])
FACES = {1: "OFA", 2: "FFA-1", 3: "FFA-2", 4: "mTL-faces", 5: "aTL-faces"}
FACE_VOXELS = {(0, 4, 2): 2, (1, 4, 3): 2, (3, 0, 3): 1}
CONSTANT_VOXEL = (1, 4, 3)  # constant in session 2, so it must be excluded
ROIS = {"prf-visualrois": "all", "floc-faces": ["FFA-1"]}


def _label_volumes(voxels: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Combined and per-hemisphere label volumes: -1 outside the brain, 0 unlabelled, k labelled."""
    vol = np.zeros(GRID, dtype=int)
    vol[0, 0, :] = -1
    for ijk, label in voxels.items():
        vol[ijk] = label
    return vol, hemispheres(vol)


def build_root(root: Path, seed: int = 0, formats: tuple[str, ...] = ("nii.gz", "hdf5")) -> dict:
    """Write a 2-subject, 2-session NSD tree (3 sessions planned in the design) and return the planted arrays."""
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(N_IMAGES), SHARED0)
    perm = rng.permutation(pool)
    subjectim = np.zeros((8, M), dtype=int)
    for s in range(8):
        own = perm[8 * s : 8 * s + 8] if s < 2 else rng.choice(pool, 8, replace=False)
        subjectim[s] = np.r_[SHARED0, own] + 1
    masterordering = rng.permutation(np.repeat(np.arange(1, M + 1), 3))[: 3 * T]
    sharedix = np.sort(SHARED0) + 1
    write_expdesign(root, masterordering, subjectim, sharedix)
    write_stim_info(root, subjectim, masterordering, SUBJECTS, N_IMAGES, trials_per_session=T)
    images = rng.integers(0, 256, size=(N_IMAGES, 8, 8, 3), dtype=np.uint8)
    write_image_brick(root, images)
    psc = {}
    for subject in SUBJECTS:
        vis, vis_hemi = _label_volumes(VISUAL_VOXELS)
        faces, faces_hemi = _label_volumes(FACE_VOXELS)
        write_roi(root, subject, "prf-visualrois", vis, VISUAL, AFFINE, vis_hemi)
        write_roi(root, subject, "floc-faces", faces, FACES, AFFINE, faces_hemi)
        write_ncsnr(root, subject, rng.uniform(0, 1.5, GRID), AFFINE)
        for session in range(1, N_SES + 1):
            data = rng.normal(size=GRID + (T,)) * 2 + rng.normal(size=GRID + (1,))
            if session == 2:
                data[CONSTANT_VOXEL] = 0.5
            psc[subject, session] = data
            for fmt in formats:
                write_betas_session(root, subject, session, data, AFFINE, fmt=fmt)
    return {"subjectim": subjectim, "masterordering": masterordering, "images": images, "psc": psc}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("nsd")
    return root, build_root(root)


@pytest.fixture(scope="module")
def loaded(tree) -> dict:
    root, _ = tree
    messages: list[str] = []
    out = {fmt: load_subject(root, 1, N_SES, ROIS, fmt=fmt, log=messages.append) for fmt in ("nii.gz", "hdf5")}
    out["messages"] = messages
    return out


def _expected_Y(truth: dict, subject: int, voxels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direct numpy: int16 round trip, z-score per voxel within each session, average repeats of each image."""
    mo = truth["masterordering"]
    ijk = tuple(voxels[c].to_numpy() for c in "ijk")
    sums, counts = {}, {}
    for session in range(1, N_SES + 1):
        x = np.rint(truth["psc"][subject, session] * 300)[ijk] / 300  # (n_voxels, T)
        z = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
        for t in range(T):
            trial = (session - 1) * T + t
            image = truth["subjectim"][subject - 1, mo[trial] - 1] - 1
            sums[image] = sums.get(image, 0) + z[:, t]
            counts[image] = counts.get(image, 0) + 1
    ids = np.array(sorted(sums))
    return ids, np.array([sums[i] / counts[i] for i in ids]), np.array([counts[i] for i in ids])


def test_expdesign_keeps_real_shapes(tree):
    root, truth = tree
    raw = scipy.io.loadmat(expdesign_path(root))
    assert raw["masterordering"].shape == (1, 3 * T)
    assert raw["subjectim"].shape == (8, M)
    assert raw["sharedix"].shape == (1, len(SHARED0))
    design = read_expdesign(root)
    np.testing.assert_array_equal(design["subjectim"], truth["subjectim"])
    np.testing.assert_array_equal(design["sharedix"], np.sort(SHARED0) + 1)


def test_stim_info_header(tree):
    root, _ = tree
    first = stim_info_path(root).read_text().splitlines()[0].split(",")
    reps = [f"subject{s}_rep{r}" for s in range(1, 9) for r in range(3)]
    expected = ["", "cocoId", "cocoSplit", "cropBox", "loss", "nsdId", "flagged", "BOLD5000", "shared1000"]
    assert first == expected + [f"subject{s}" for s in range(1, 9)] + reps
    stim = pd.read_csv(stim_info_path(root), index_col=0)
    assert len(stim) == N_IMAGES and (stim["nsdId"].to_numpy() == np.arange(N_IMAGES)).all()
    assert set(stim.index[stim["shared1000"]]) == set(SHARED0)
    assert (stim[[f"subject{s}_rep{r}" for s in range(3, 9) for r in range(3)]] == 0).all().all()


@pytest.mark.parametrize("subject", [1, 2])
def test_trial_table_matches_stim_info(tree, subject):
    root, _ = tree
    table = trial_table(root, subject, N_SES, trials_per_session=T)
    stim = pd.read_csv(stim_info_path(root), index_col=0)
    n = N_SES * T
    from_csv = {}
    for r in range(3):
        col = stim[f"subject{subject}_rep{r}"]
        for nsd_id, trial in col[(col > 0) & (col <= n)].items():
            from_csv[trial - 1] = nsd_id
    assert sorted(from_csv) == list(range(n))
    assert list(table.columns) == ["trial", "session", "trial_in_session", "nsd_id"]
    np.testing.assert_array_equal(table["nsd_id"], [from_csv[t] for t in range(n)])
    np.testing.assert_array_equal(table["session"], np.repeat(np.arange(1, N_SES + 1), T))
    np.testing.assert_array_equal(table["trial_in_session"], np.tile(np.arange(T), N_SES))


def test_stimulus_ids_is_the_union(tree):
    root, _ = tree
    ids = stimulus_ids(root, SUBJECTS, trials_per_session=T)
    union = set()
    for s, n in SUBJECTS.items():
        union |= set(trial_table(root, s, n, trials_per_session=T)["nsd_id"])
    np.testing.assert_array_equal(ids, sorted(union))


def test_trial_table_too_many_sessions(tree):
    root, _ = tree
    with pytest.raises(ValueError, match="n_sessions"):
        trial_table(root, 1, 4, trials_per_session=T)


def test_read_images_order_and_missing(tree):
    root, truth = tree
    ids = [7, 2, 7, 29]
    np.testing.assert_array_equal(read_images(root, ids), truth["images"][ids])
    with pytest.raises(ValueError, match=r"nsd_stimuli\.hdf5") as err:
        read_images(root, [5, 40])
    assert "40" in str(err.value) and "[40]" in str(err.value)


def test_betas_files_in_real_layout(tree):
    root, truth = tree
    nii = nib.load(betas_path(root, 1, 1))
    assert nii.shape == GRID + (T,) and nii.get_data_dtype() == np.int16
    assert nii.header.get_slope_inter() == (None, None)
    with h5py.File(betas_path(root, 1, 1, fmt="hdf5"), "r") as f:
        ds = f["betas"]
        assert ds.shape == (T,) + GRID[::-1] and ds.chunks == (T, 1, 1, 1) and ds.dtype == np.int16
        np.testing.assert_array_equal(ds[:].transpose(3, 2, 1, 0), np.asarray(nii.dataobj))
    np.testing.assert_array_equal(np.asarray(nii.dataobj), np.rint(truth["psc"][1, 1] * 300))
    assert ctab_path(root, 1, "prf-visualrois").read_text().splitlines()[0] == "0 Unknown"
    assert read_ctab(ctab_path(root, 1, "floc-faces")) == {0: "Unknown", **FACES}


def test_load_subject_values(tree, loaded):
    root, truth = tree
    target = loaded["nii.gz"]
    vox = target.voxels
    ids, Y, counts = _expected_Y(truth, 1, vox)
    np.testing.assert_array_equal(target.nsd_ids, ids)
    np.testing.assert_array_equal(target.n_repeats, counts)
    assert target.Y.dtype == np.float32 and target.Y.shape == (len(ids), len(vox))
    np.testing.assert_allclose(target.Y, Y, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(target.shared, np.isin(ids, SHARED0))
    assert set(counts) > {1}  # mixed repeat counts are exercised


def test_voxel_selection_and_exclusion(loaded):
    target = loaded["nii.gz"]
    vox = target.voxels
    selected = set(VISUAL_VOXELS) | {v for v, k in FACE_VOXELS.items() if k == 2}
    got = set(zip(vox["i"], vox["j"], vox["k"], strict=True))
    assert got == selected - {CONSTANT_VOXEL}
    assert any("excluded 1 of" in m for m in loaded["messages"])
    row = vox[(vox["i"] == 0) & (vox["j"] == 4) & (vox["k"] == 2)].iloc[0]
    assert (row["roi"], row["atlas"]) == ("hV4", "prf-visualrois")
    assert row["memberships"] == "prf-visualrois/hV4;floc-faces/FFA-1"
    assert set(vox["roi"]) == {"V1", "V2", "V3", "hV4"}
    for (i, j, k), label in VISUAL_VOXELS.items():
        r = vox[(vox["i"] == i) & (vox["j"] == j) & (vox["k"] == k)].iloc[0]
        assert r["roi"] == VISUAL[label].rstrip("vd") and r["hemi"] == ("lh" if i < 3 else "rh")


def test_coordinates_noise_ceiling_and_distance(tree, loaded):
    root, _ = tree
    vox = loaded["nii.gz"].voxels
    ijk = vox[["i", "j", "k"]].to_numpy()
    # the NIfTI header stores the affine as float32
    np.testing.assert_allclose(vox[["x_mm", "y_mm", "z_mm"]].to_numpy(), 1.8 * ijk + [-5.0, -4.0, -3.0], atol=1e-5)
    ncsnr = nib.load(ncsnr_path(root, 1)).get_fdata()
    np.testing.assert_allclose(vox["ncsnr"], ncsnr[tuple(ijk.T)], rtol=1e-6)
    inv = np.mean(1.0 / loaded["nii.gz"].n_repeats)
    np.testing.assert_allclose(vox["noise_ceiling"], 100 * vox["ncsnr"] ** 2 / (vox["ncsnr"] ** 2 + inv))
    v1 = {"lh": [(1, 1, 0), (1, 2, 0), (2, 1, 0), (2, 1, 1)], "rh": [(4, 1, 0), (4, 2, 0), (5, 1, 1)]}
    for hemi, voxels in v1.items():
        centre = 1.8 * np.mean(voxels, axis=0) + [-5.0, -4.0, -3.0]
        rows = vox["hemi"] == hemi
        expected = np.linalg.norm(vox.loc[rows, ["x_mm", "y_mm", "z_mm"]].to_numpy() - centre, axis=1)
        np.testing.assert_allclose(vox.loc[rows, "distance_v1"], expected, atol=1e-5)


def test_noise_ceiling_hand_values():
    assert noise_ceiling(1.0, 3) == pytest.approx(75.0)
    assert noise_ceiling(1.0, [3, 2]) == pytest.approx(100 / (1 + 5 / 12))
    # Algonauts mixed counts: A=2 images with 3 trials, B=0, C=1 with 1 trial
    assert noise_ceiling(2.0, [3, 3, 1]) == pytest.approx(100 * 4 / (4 + (2 / 3 + 0 / 2 + 1 / 1) / 3))
    np.testing.assert_allclose(noise_ceiling(np.array([0.0, 1.0]), 1), [0.0, 50.0])


def test_hdf5_and_nifti_agree(loaded):
    a, b = loaded["nii.gz"], loaded["hdf5"]
    np.testing.assert_array_equal(a.Y, b.Y)
    np.testing.assert_array_equal(a.nsd_ids, b.nsd_ids)
    pd.testing.assert_frame_equal(a.voxels, b.voxels)


def test_strict_checks_grid_and_750_trials(tree, monkeypatch):
    root, _ = tree
    with pytest.raises(ValueError, match=r"func1pt8mm grid is \(81, 104, 83\)"):
        load_subject(root, 1, N_SES, ROIS, strict=True, log=lambda m: None)
    monkeypatch.setitem(FUNC1PT8MM_GRID, 1, GRID)
    with pytest.raises(ValueError, match="750 trials"):
        load_subject(root, 1, N_SES, ROIS, strict=True, log=lambda m: None)
    with pytest.raises(ValueError, match="completed 40 sessions"):
        load_subject(root, 1, 41, ROIS, strict=True, log=lambda m: None)


def test_a_requested_roi_without_voxels_is_a_warning_and_in_strict_mode_an_error(tree, monkeypatch, caplog):
    """mTL-faces is in the atlas's table but labels no voxel of the fixture (before: an INFO line only). Named in
    the config, it is a warning (the subject's targets go on without it), and with strict: true an error."""
    root, _ = tree
    rois = {"prf-visualrois": "all", "floc-faces": ["FFA-1", "mTL-faces"]}
    with caplog.at_level("INFO", logger="gradbrain.data.nsd"):
        loaded = load_subject(root, 1, N_SES, rois, log=lambda m: None)
    warned = [r for r in caplog.records if "mTL-faces" in r.getMessage()]
    assert [r.levelname for r in warned] == ["WARNING"], caplog.text
    assert f"ROI floc-faces/mTL-faces has no voxels in {roi_path(root, 1, 'floc-faces')}" in warned[0].getMessage()
    assert "rois" in warned[0].getMessage() and "strict" in warned[0].getMessage()
    memberships = ";".join(loaded.voxels["memberships"])
    assert "floc-faces/FFA-1" in memberships and "mTL-faces" not in memberships
    monkeypatch.setitem(FUNC1PT8MM_GRID, 1, GRID)
    with pytest.raises(ValueError, match="ROI floc-faces/mTL-faces has no voxels") as err:
        load_subject(root, 1, N_SES, rois, strict=True, log=lambda m: None)
    assert "remove it from the dataset's rois" in str(err.value)


@pytest.mark.parametrize("fmt", ["nii.gz", "hdf5"])
def test_missing_session_names_file_and_config(tree, fmt):
    root, _ = tree
    with pytest.raises(FileNotFoundError, match="n_sessions") as err:
        load_subject(root, 1, 3, ROIS, fmt=fmt, log=lambda m: None)
    msg = str(err.value)
    assert "Session 3" in msg and str(betas_path(root, 1, 3, fmt)) in msg and "download" in msg


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_nifti(tmp_path, keep):
    build_root(tmp_path, formats=("nii.gz",))
    path = betas_path(tmp_path, 1, 2 if keep > 0.1 else 1)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(NSDFileError, match="truncated") as err:
        load_subject(tmp_path, 1, N_SES, ROIS, log=lambda m: None)
    assert str(path) in str(err.value)


def test_missing_roi_ctab_and_v1(tmp_path):
    build_root(tmp_path, formats=("nii.gz",))
    quiet = {"log": lambda m: None}
    lh_faces = roi_path(tmp_path, 1, "floc-faces", "lh")
    lh_faces.rename(lh_faces.with_suffix(".bak"))
    with pytest.raises(FileNotFoundError, match="floc-faces") as err:
        load_subject(tmp_path, 1, N_SES, ROIS, **quiet)
    assert str(lh_faces) in str(err.value)
    lh_faces.with_suffix(".bak").rename(lh_faces)

    ctab = ctab_path(tmp_path, 1, "floc-faces")
    ctab.rename(ctab.with_suffix(".bak"))
    with pytest.raises(FileNotFoundError, match=r"floc-faces\.mgz\.ctab"):
        load_subject(tmp_path, 1, N_SES, ROIS, **quiet)
    ctab.with_suffix(".bak").rename(ctab)

    with pytest.raises(ValueError, match="available"):
        load_subject(tmp_path, 1, N_SES, {"floc-faces": ["FFA"]}, **quiet)

    for hemi in (None, "lh", "rh"):
        roi_path(tmp_path, 1, "prf-visualrois", hemi).unlink()
    with pytest.raises(ValueError, match="prf-visualrois") as err:
        load_subject(tmp_path, 1, N_SES, {"floc-faces": ["FFA-1"]}, **quiet)
    assert "distance_v1 needs V1" in str(err.value)


def test_fsaverage_space(tmp_path):
    """fsaverage betas are float32 PSC (not x300) in (V,1,1,T) .mgh files; vertices come from the white surface."""
    rng = np.random.default_rng(3)
    n_vert = 12
    build_root(tmp_path, formats=())
    labels = {"lh": np.zeros(n_vert, int), "rh": np.zeros(n_vert, int)}
    labels["lh"][[0, 1]] = [1, 2]
    labels["lh"][5] = 7
    labels["rh"][[2, 3, 4]] = [1, 1, 3]
    write_fsaverage_roi(tmp_path, "prf-visualrois", labels, VISUAL)
    coords = {h: rng.normal(scale=20, size=(n_vert, 3)) for h in HEMIS}
    for hemi in HEMIS:
        write_fsaverage_surface(tmp_path, hemi, coords[hemi], np.array([[0, 1, 2], [1, 2, 3]]))
    write_ncsnr_fsaverage(tmp_path, 1, {h: rng.uniform(size=n_vert) for h in HEMIS})
    psc = {s: {h: rng.normal(size=(n_vert, T)).astype(np.float32) for h in HEMIS} for s in (1, 2)}
    for s in (1, 2):
        write_betas_session_fsaverage(tmp_path, 1, s, psc[s])
    img = nib.load(fsaverage_betas_path(tmp_path, 1, 1, "lh"))
    assert img.shape == (n_vert, 1, 1, T) and img.get_data_dtype() == np.dtype(">f4")

    target = load_subject(tmp_path, 1, N_SES, {"prf-visualrois": "all"}, space="fsaverage", log=lambda m: None)
    vox = target.voxels
    assert list(zip(vox["hemi"], vox["i"], strict=True)) == [
        ("lh", 0),
        ("lh", 1),
        ("lh", 5),
        ("rh", 2),
        ("rh", 3),
        ("rh", 4),
    ]
    assert list(vox["roi"]) == ["V1", "V1", "hV4", "V1", "V1", "V2"]
    design = read_expdesign(tmp_path)
    mo, si = design["masterordering"], design["subjectim"]
    sums, counts = {}, {}
    for s in (1, 2):
        x = np.concatenate([psc[s]["lh"][[0, 1, 5]], psc[s]["rh"][[2, 3, 4]]]).astype(np.float64)
        z = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
        for t in range(T):
            image = si[0, mo[(s - 1) * T + t] - 1] - 1
            sums[image] = sums.get(image, 0) + z[:, t]
            counts[image] = counts.get(image, 0) + 1
    np.testing.assert_allclose(target.Y, [sums[i] / counts[i] for i in sorted(sums)], rtol=1e-5, atol=1e-5)
    lh_centre = coords["lh"][[0, 1]].mean(0)
    np.testing.assert_allclose(vox["distance_v1"].iloc[2], np.linalg.norm(coords["lh"][5] - lh_centre))
    rh_centre = coords["rh"][[2, 3]].mean(0)
    np.testing.assert_allclose(vox["distance_v1"].iloc[5], np.linalg.norm(coords["rh"][4] - rh_centre))


def test_required_files_lists_v1_and_sessions():
    files = required_files(3, 2, ["floc-faces"])
    assert "nsddata_betas/ppdata/subj03/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session02.nii.gz" in files
    assert "nsddata/ppdata/subj03/func1pt8mm/roi/lh.prf-visualrois.nii.gz" in files
    assert "nsddata/freesurfer/subj03/label/floc-faces.mgz.ctab" in files
    assert not any("session03" in f for f in files)
