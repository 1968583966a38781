"""Write NSD files in their real formats from synthetic arrays (docs/data-formats.md 5).

NSD may not be redistributed, so every fixture and the planted-truth simulation are written by these functions and
then read by the same code as real data. Each writer keeps the real file's layout: 1-based indices, int16 PSC x 300,
the HDF5 transpose, the ``.ctab`` text, the MGH shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

from gradbrain.data.nsd.paths import (
    BETA_VERSION,
    HEMIS,
    PSC_SCALE,
    TRIALS_PER_SESSION,
    PathLike,
    betas_path,
    ctab_path,
    expdesign_path,
    fsaverage_betas_path,
    fsaverage_label_path,
    fsaverage_ncsnr_path,
    fsaverage_surface_path,
    mni_transform_path,
    ncsnr_path,
    roi_path,
    stim_info_path,
    stimuli_path,
)
from gradbrain.data.nsd.read import n_trials

_REP_COLUMNS = 3
_INT16 = np.iinfo(np.int16)


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_expdesign(root: PathLike, masterordering: np.ndarray, subjectim: np.ndarray, sharedix: np.ndarray) -> Path:
    """Save the 1-based design arrays to ``nsd_expdesign.mat`` with the real 2-D shapes (1,N), (8,M), (1,K).

    ``scipy.io.savemat`` with 2-D arrays keeps these shapes on ``loadmat`` (docs/data-formats.md 1.3, 5).
    """
    mo = np.asarray(masterordering, dtype=np.float64).reshape(1, -1)
    si = np.asarray(subjectim, dtype=np.float64)
    sh = np.asarray(sharedix, dtype=np.float64).reshape(1, -1)
    if si.ndim != 2 or si.shape[0] != 8:
        raise ValueError(f"subjectim must have shape (8, M) like the real file, got {si.shape}")
    for name, arr in (("masterordering", mo), ("sharedix", sh)):
        if arr.size and arr.min() < 1:
            raise ValueError(f"{name} holds 1-based indices; found a value < 1")
    if mo.size and mo.max() > si.shape[1]:
        raise ValueError(f"masterordering refers to image {int(mo.max())} but subjectim has {si.shape[1]} columns")
    path = _mkparent(expdesign_path(root))
    scipy.io.savemat(path, {"masterordering": mo, "subjectim": si, "sharedix": sh})
    return path


def _rep_trials(
    subjectim: np.ndarray, masterordering: np.ndarray, subject: int, n_sessions: int, trials_per_session: int
) -> dict[int, list[int]]:
    """0-based nsd id -> sorted 1-based trial numbers among the trials of ``subject``'s first ``n_sessions``."""
    mo = np.asarray(masterordering).ravel().astype(int)
    n = n_trials(n_sessions, trials_per_session, len(mo), subject)
    nsd0 = np.asarray(subjectim).astype(int)[subject - 1, mo[:n] - 1] - 1
    reps: dict[int, list[int]] = {}
    for t, image in enumerate(nsd0, start=1):
        reps.setdefault(int(image), []).append(t)
    return reps


def write_stim_info(
    root: PathLike,
    subjectim: np.ndarray,
    masterordering: np.ndarray,
    n_sessions: Mapping[int, int],
    n_images: int,
    *,
    sharedix: np.ndarray | None = None,
    trials_per_session: int = TRIALS_PER_SESSION,
) -> Path:
    """Write ``nsd_stim_info_merged.csv`` with the real header, computed from the design (docs/data-formats.md 1.4).

    ``subjectK`` marks the images assigned to subject K and ``subjectK_repR`` holds the 1-based trial numbers of
    its shows within the first ``n_sessions[K] * trials_per_session`` trials (0 when not shown). Subjects not in
    ``n_sessions`` get 0s. ``shared1000`` comes from ``sharedix`` (1-based) or, when it is not given, from the
    images present in every filled (all > 0) row of ``subjectim``. COCO columns hold synthetic placeholders.
    """
    si = np.asarray(subjectim).astype(int)
    ids = np.arange(n_images)
    if sharedix is None:
        shared0 = set.intersection(*(set(row - 1) for row in si if (row > 0).all()))
    else:
        shared0 = set(np.asarray(sharedix).ravel().astype(int) - 1)
    df = pd.DataFrame(
        {
            "cocoId": ids,
            "cocoSplit": "train2017",
            "cropBox": "(0, 0, 0, 0)",
            "loss": 0.0,
            "nsdId": ids,
            "flagged": False,
            "BOLD5000": False,
            "shared1000": np.isin(ids, sorted(shared0)),
        }
    )
    assigned = {s: np.zeros(n_images, dtype=int) for s in range(1, 9)}
    reps = {(s, r): np.zeros(n_images, dtype=int) for s in range(1, 9) for r in range(_REP_COLUMNS)}
    for subject, n_ses in n_sessions.items():
        row = si[subject - 1] - 1
        if row.min() < 0 or row.max() >= n_images:
            raise ValueError(f"subjectim row of subject {subject} points outside 0..{n_images - 1}")
        assigned[subject][row] = 1
        for image, trials in _rep_trials(si, masterordering, subject, n_ses, trials_per_session).items():
            if len(trials) > _REP_COLUMNS:
                raise ValueError(
                    f"image {image} is shown {len(trials)} times to subject {subject}; "
                    f"the CSV has {_REP_COLUMNS} rep columns"
                )
            for r, t in enumerate(trials):
                reps[subject, r][image] = t
    for s in range(1, 9):
        df[f"subject{s}"] = assigned[s]
    for s in range(1, 9):
        for r in range(_REP_COLUMNS):
            df[f"subject{s}_rep{r}"] = reps[s, r]
    path = _mkparent(stim_info_path(root))
    df.to_csv(path)
    return path


def write_image_brick(root: PathLike, images: np.ndarray) -> Path:
    """Write uint8 RGB images (N, H, W, 3) as ``imgBrick`` in ``nsd_stimuli.hdf5`` (docs/data-formats.md 1.5)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"imgBrick must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    path = _mkparent(stimuli_path(root))
    with h5py.File(path, "w") as f:
        f.create_dataset("imgBrick", data=images)
    return path


def _psc_to_int16(psc: np.ndarray) -> np.ndarray:
    """PSC -> int16 PSC x 300, rounded and clipped; NaN becomes 0 like the zeroed non-brain voxels.

    docs/data-formats.md 1.6.
    """
    scaled = np.nan_to_num(np.asarray(psc, dtype=np.float64) * PSC_SCALE, nan=0.0)
    return np.clip(np.rint(scaled), _INT16.min, _INT16.max).astype(np.int16)


def write_betas_session(
    root: PathLike,
    subject: int,
    session: int,
    psc: np.ndarray,
    affine: np.ndarray,
    fmt: str = "nii.gz",
    space: str = "func1pt8mm",
    beta_version: str = BETA_VERSION,
) -> Path:
    """Write one session of volume betas from PSC (X, Y, Z, T) as the int16 x300 file NSD ships.

    NIfTI keeps (X, Y, Z, T) with no scaling; HDF5 stores dataset ``betas`` as (T, Z, Y, X) with chunks (T, 1, 1, 1),
    i.e. MATLAB's X x Y x Z x T seen from h5py (docs/data-formats.md 1.6, 5).
    """
    psc = np.asarray(psc)
    if psc.ndim != 4:
        raise ValueError(f"psc must be (X, Y, Z, T), got {psc.shape}")
    raw = _psc_to_int16(psc)
    path = _mkparent(betas_path(root, subject, session, fmt, space, beta_version))
    if fmt == "nii.gz":
        nib.save(nib.Nifti1Image(raw, np.asarray(affine, dtype=np.float64)), path)
    else:
        with h5py.File(path, "w") as f:
            f.create_dataset("betas", data=raw.transpose(3, 2, 1, 0), chunks=(raw.shape[3], 1, 1, 1))
    return path


def _write_ctab(path: Path, labels: Mapping[int, str]) -> Path:
    """Plain-text label table, ``<id> <name>`` per line, first line ``0 Unknown`` (docs/data-formats.md 1.9)."""
    lines = ["0 Unknown"] + [f"{int(k)} {name}" for k, name in sorted(labels.items()) if int(k) != 0]
    _mkparent(path).write_text("\n".join(lines) + "\n")
    return path


def write_roi(
    root: PathLike,
    subject: int,
    atlas: str,
    volume: np.ndarray,
    labels: Mapping[int, str],
    affine: np.ndarray,
    hemi_volumes: Mapping[str, np.ndarray],
) -> list[Path]:
    """Write ``<atlas>.nii.gz``, ``lh.<atlas>.nii.gz``, ``rh.<atlas>.nii.gz`` and ``<atlas>.mgz.ctab``.

    Volumes hold -1 outside the brain, 0 for unlabelled cortex and k for label k (docs/data-formats.md 1.9).
    """
    missing = set(HEMIS) - set(hemi_volumes)
    if missing:
        raise ValueError(f"hemi_volumes needs keys 'lh' and 'rh'; missing {sorted(missing)}")
    affine = np.asarray(affine, dtype=np.float64)
    paths = []
    for hemi, vol in ((None, volume), ("lh", hemi_volumes["lh"]), ("rh", hemi_volumes["rh"])):
        vol = np.asarray(vol)
        if vol.shape != np.shape(volume):
            raise ValueError(f"{hemi} volume has shape {vol.shape}, expected {np.shape(volume)}")
        path = _mkparent(roi_path(root, subject, atlas, hemi))
        nib.save(nib.Nifti1Image(vol.astype(np.int16), affine), path)
        paths.append(path)
    paths.append(_write_ctab(ctab_path(root, subject, atlas), labels))
    return paths


def write_ncsnr(
    root: PathLike,
    subject: int,
    ncsnr: np.ndarray,
    affine: np.ndarray,
    space: str = "func1pt8mm",
    beta_version: str = BETA_VERSION,
) -> Path:
    """Write the float noise-ceiling SNR volume ``ncsnr.nii.gz`` (not x300, docs/data-formats.md 1.8)."""
    path = _mkparent(ncsnr_path(root, subject, space, beta_version))
    nib.save(nib.Nifti1Image(np.asarray(ncsnr, dtype=np.float32), np.asarray(affine, dtype=np.float64)), path)
    return path


def write_mni_transform(
    root: PathLike, subject: int, coords: np.ndarray, affine: np.ndarray, space: str = "func1pt8mm"
) -> Path:
    """Write ``transforms/MNI-to-<space>.nii.gz`` from (X, Y, Z, 3) 1-based MNI voxel coordinates (9999: none).

    The volume lies on the functional grid (``affine`` of the betas) and holds, per voxel, the decimal coordinate in
    NSD's RPI MNI grid, 182 x 218 x 182 (docs/data-formats.md 1.11); stored as float32 without scaling.
    """
    coords = np.asarray(coords, dtype=np.float32)
    if coords.ndim != 4 or coords.shape[3] != 3:
        raise ValueError(f"coords must be (X, Y, Z, 3) MNI voxel coordinates, got {coords.shape}")
    path = _mkparent(mni_transform_path(root, subject, space))
    nib.save(nib.Nifti1Image(coords, np.asarray(affine, dtype=np.float64)), path)
    return path


def _save_mgh(path: Path, data: np.ndarray) -> Path:
    data = np.asarray(data)
    shape = (data.shape[0], 1, 1) + data.shape[1:]
    nib.save(nib.MGHImage(data.reshape(shape), np.eye(4)), _mkparent(path))
    return path


def write_betas_session_fsaverage(
    root: PathLike,
    subject: int,
    session: int,
    psc: Mapping[str, np.ndarray],
    beta_version: str = BETA_VERSION,
) -> list[Path]:
    """Write ``{lh,rh}.betas_sessionNN.mgh``: float32 PSC, shape (V, 1, 1, T), no x300 (docs/data-formats.md 1.7, 5).

    ``psc`` maps 'lh'/'rh' to (V, T) arrays.
    """
    return [
        _save_mgh(
            fsaverage_betas_path(root, subject, session, hemi, beta_version),
            np.asarray(psc[hemi], np.float32),
        )
        for hemi in HEMIS
    ]


def write_ncsnr_fsaverage(
    root: PathLike, subject: int, ncsnr: Mapping[str, np.ndarray], beta_version: str = BETA_VERSION
) -> list[Path]:
    """Write ``{lh,rh}.ncsnr.mgh`` from 'lh'/'rh' -> (V,) float arrays (docs/data-formats.md 1.8)."""
    return [
        _save_mgh(fsaverage_ncsnr_path(root, subject, hemi, beta_version), np.asarray(ncsnr[hemi], np.float32))
        for hemi in HEMIS
    ]


def write_fsaverage_roi(
    root: PathLike, atlas: str, hemi_labels: Mapping[str, np.ndarray], labels: Mapping[int, str]
) -> list[Path]:
    """Write the group atlas ``{lh,rh}.<atlas>.mgz`` (int32, (V, 1, 1)) and ``fsaverage/label/<atlas>.mgz.ctab``."""
    paths = [
        _save_mgh(fsaverage_label_path(root, atlas, hemi), np.asarray(hemi_labels[hemi]).astype(np.int32))
        for hemi in HEMIS
    ]
    paths.append(_write_ctab(ctab_path(root, None, atlas), labels))
    return paths


def write_fsaverage_surface(
    root: PathLike, hemi: str, coords: np.ndarray, faces: np.ndarray, surface: str = "white"
) -> Path:
    """Write a FreeSurfer surface (vertex mm coordinates and triangles) read back by ``read_geometry``."""
    path = _mkparent(fsaverage_surface_path(root, hemi, surface))
    nib.freesurfer.write_geometry(path, np.asarray(coords, np.float64), np.asarray(faces, np.int32))
    return path
