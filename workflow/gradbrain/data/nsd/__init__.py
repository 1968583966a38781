"""Read and write the Natural Scenes Dataset (NSD, Allen et al. 2022) in its real file formats.

The readers turn a local copy of the bucket (``root`` = ``nsd_root``) into model-ready fMRI targets: per-session
z-scored betas averaged over the repeats of each image, for the voxels of the requested ROIs, with coordinates,
hemisphere, noise ceiling and distance from V1. The writers produce the same files from synthetic arrays, so that
the planted-truth simulation and the tests exercise exactly the code paths that real data take (NSD may not be
redistributed, so fixtures are always synthetic).

Every format fact used here (paths, shapes, 1-based indices, the int16 x300 scaling, the HDF5 transpose, the
``.ctab`` layout, the noise-ceiling formula) is taken from ``shared/reference/data-formats.md`` sections 1, 4
and 5; the section numbers are cited where each fact is used.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io
from nibabel.filebasedimages import ImageFileError

__all__ = [
    "BETA_VERSION",
    "COMPLETED_SESSIONS",
    "FMRITargets",
    "FUNC1PT8MM_GRID",
    "HEMIS",
    "ImageBrick",
    "NSDFileError",
    "TRIALS_PER_SESSION",
    "betas_path",
    "ctab_path",
    "expdesign_path",
    "fsaverage_betas_path",
    "fsaverage_label_path",
    "fsaverage_ncsnr_path",
    "fsaverage_surface_path",
    "load_subject",
    "ncsnr_path",
    "noise_ceiling",
    "read_ctab",
    "read_expdesign",
    "read_images",
    "required_files",
    "roi_path",
    "stim_info_path",
    "stimuli_path",
    "stimulus_ids",
    "trial_table",
    "write_betas_session",
    "write_betas_session_fsaverage",
    "write_expdesign",
    "write_fsaverage_roi",
    "write_fsaverage_surface",
    "write_image_brick",
    "write_ncsnr",
    "write_ncsnr_fsaverage",
    "write_roi",
    "write_stim_info",
]

_LOG = logging.getLogger(__name__)

PathLike = str | os.PathLike

BETA_VERSION = "betas_fithrf_GLMdenoise_RR"
"""The recommended beta version (b3), data-formats.md 1.2."""

TRIALS_PER_SESSION = 750
"""Trials per NSD session (12 runs x 62/63 stimulus trials), data-formats.md 1.7 / 1.10."""

COMPLETED_SESSIONS = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}
"""Sessions each subject completed (data-formats.md 1.10); checked in strict mode."""

FUNC1PT8MM_GRID = {
    1: (81, 104, 83),
    2: (82, 106, 84),
    3: (81, 106, 82),
    4: (85, 99, 80),
    5: (79, 97, 78),
    6: (85, 113, 83),
    7: (78, 95, 81),
    8: (80, 103, 78),
}
"""func1pt8mm (X, Y, Z) grid per subject (data-formats.md 1.7); checked in strict mode."""

FSAVERAGE_VERTICES = 163842
"""Vertices per fsaverage hemisphere (data-formats.md 1.7)."""

HEMIS = ("lh", "rh")
_REP_COLUMNS = 3
_VOXEL_COLUMNS = [
    "i",
    "j",
    "k",
    "x_mm",
    "y_mm",
    "z_mm",
    "hemi",
    "roi",
    "atlas",
    "ncsnr",
    "noise_ceiling",
    "distance_v1",
]
_INT16 = np.iinfo(np.int16)
_PSC_SCALE = 300.0
_VISUAL_HALVES = re.compile(r"^(V[123])[vd]$")
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, ImageFileError)
_NIFTI_BLOCK_BYTES = 64 << 20  # trials of one NIfTI session read at a time (about 45 of subj01's 750)


class NSDFileError(OSError):
    """An NSD file exists but cannot be read: truncated, corrupt or not in the expected format."""


@dataclass
class FMRITargets:
    """fMRI targets of one subject, one row per image and one column per voxel (or fsaverage vertex).

    ``Y`` holds each session's betas z-scored per voxel within the session, then averaged over the repeats of each
    image; ``voxels`` describes the columns of ``Y`` (see :func:`load_subject`).
    """

    Y: np.ndarray
    nsd_ids: np.ndarray
    n_repeats: np.ndarray
    shared: np.ndarray
    voxels: pd.DataFrame
    subject: int | None = None

    def __post_init__(self) -> None:
        n_images, n_voxels = self.Y.shape
        if not (len(self.nsd_ids) == len(self.n_repeats) == len(self.shared) == n_images):
            raise ValueError("nsd_ids, n_repeats and shared must have one entry per row of Y")
        if len(self.voxels) != n_voxels:
            raise ValueError("voxels must have one row per column of Y")


# ---------------------------------------------------------------------------------------------------------------
# Paths (data-formats.md 1.2)


def _subj(subject: int) -> str:
    if not 1 <= int(subject) <= 8:
        raise ValueError(f"NSD subjects are 1..8, got {subject}")
    return f"subj{int(subject):02d}"


def expdesign_path(root: PathLike) -> Path:
    """``nsd_expdesign.mat``: trial -> image design (data-formats.md 1.3)."""
    return Path(root) / "nsddata/experiments/nsd/nsd_expdesign.mat"


def stim_info_path(root: PathLike) -> Path:
    """``nsd_stim_info_merged.csv``: one row per 73k image (data-formats.md 1.4)."""
    return Path(root) / "nsddata/experiments/nsd/nsd_stim_info_merged.csv"


def stimuli_path(root: PathLike) -> Path:
    """``nsd_stimuli.hdf5`` holding ``imgBrick`` (data-formats.md 1.6)."""
    return Path(root) / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"


def betas_path(
    root: PathLike,
    subject: int,
    session: int,
    fmt: str = "nii.gz",
    space: str = "func1pt8mm",
    beta_version: str = BETA_VERSION,
) -> Path:
    """Volume betas of one session, ``betas_sessionNN.{nii.gz,hdf5}`` (data-formats.md 1.2)."""
    if fmt not in ("nii.gz", "hdf5"):
        raise ValueError(f"volume betas come as 'nii.gz' or 'hdf5', got {fmt!r}")
    return (
        Path(root)
        / f"nsddata_betas/ppdata/{_subj(subject)}/{space}/{beta_version}/betas_session{int(session):02d}.{fmt}"
    )


def ncsnr_path(root: PathLike, subject: int, space: str = "func1pt8mm", beta_version: str = BETA_VERSION) -> Path:
    """Noise-ceiling SNR volume beside the betas (data-formats.md 1.8)."""
    return Path(root) / f"nsddata_betas/ppdata/{_subj(subject)}/{space}/{beta_version}/ncsnr.nii.gz"


def roi_path(root: PathLike, subject: int, atlas: str, hemi: str | None = None, space: str = "func1pt8mm") -> Path:
    """Volume ROI file ``{,lh.,rh.}<atlas>.nii.gz`` (data-formats.md 1.9)."""
    prefix = f"{hemi}." if hemi else ""
    return Path(root) / f"nsddata/ppdata/{_subj(subject)}/{space}/roi/{prefix}{atlas}.nii.gz"


def ctab_path(root: PathLike, subject: int | None, atlas: str) -> Path:
    """Label table ``<atlas>.mgz.ctab``; ``subject=None`` gives the fsaverage one (data-formats.md 1.2, 1.9)."""
    who = "fsaverage" if subject is None else _subj(subject)
    return Path(root) / f"nsddata/freesurfer/{who}/label/{atlas}.mgz.ctab"


def fsaverage_betas_path(
    root: PathLike, subject: int, session: int, hemi: str, beta_version: str = BETA_VERSION
) -> Path:
    """fsaverage betas ``{lh,rh}.betas_sessionNN.mgh`` (data-formats.md 1.2, 1.7)."""
    return (
        Path(root)
        / f"nsddata_betas/ppdata/{_subj(subject)}/fsaverage/{beta_version}/{hemi}.betas_session{int(session):02d}.mgh"
    )


def fsaverage_ncsnr_path(root: PathLike, subject: int, hemi: str, beta_version: str = BETA_VERSION) -> Path:
    """fsaverage noise-ceiling SNR ``{lh,rh}.ncsnr.mgh`` (data-formats.md 1.8)."""
    return Path(root) / f"nsddata_betas/ppdata/{_subj(subject)}/fsaverage/{beta_version}/{hemi}.ncsnr.mgh"


def fsaverage_label_path(root: PathLike, atlas: str, hemi: str) -> Path:
    """Group atlas on fsaverage ``{lh,rh}.<atlas>.mgz`` (data-formats.md 1.2)."""
    return Path(root) / f"nsddata/freesurfer/fsaverage/label/{hemi}.{atlas}.mgz"


def fsaverage_surface_path(root: PathLike, hemi: str, surface: str = "white") -> Path:
    """fsaverage surface geometry, e.g. ``surf/lh.white``."""
    return Path(root) / f"nsddata/freesurfer/fsaverage/surf/{hemi}.{surface}"


def required_files(
    subject: int,
    n_sessions: int,
    atlases: Iterable[str],
    *,
    fmt: str = "nii.gz",
    space: str = "func1pt8mm",
    beta_version: str = BETA_VERSION,
) -> list[str]:
    """Bucket keys :func:`load_subject` reads for one subject, for a download or existence-check rule.

    ``prf-visualrois`` is always included because ``distance_v1`` needs V1.
    """
    atlases = list(dict.fromkeys([*atlases, "prf-visualrois"]))
    root = Path(".")
    files = [expdesign_path(root)]
    if space == "fsaverage":
        for hemi in HEMIS:
            files += [fsaverage_betas_path(root, subject, s, hemi, beta_version) for s in range(1, n_sessions + 1)]
            files += [
                fsaverage_ncsnr_path(root, subject, hemi, beta_version),
                fsaverage_surface_path(root, hemi),
            ]
            files += [fsaverage_label_path(root, a, hemi) for a in atlases]
        files += [ctab_path(root, None, a) for a in atlases]
    else:
        files += [betas_path(root, subject, s, fmt, space, beta_version) for s in range(1, n_sessions + 1)]
        files.append(ncsnr_path(root, subject, space, beta_version))
        for atlas in atlases:
            files += [roi_path(root, subject, atlas, hemi, space) for hemi in (None, *HEMIS)]
            files.append(ctab_path(root, subject, atlas))
    return [p.as_posix() for p in files]


# ---------------------------------------------------------------------------------------------------------------
# Writers (real formats, data-formats.md section 5)


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_expdesign(root: PathLike, masterordering: np.ndarray, subjectim: np.ndarray, sharedix: np.ndarray) -> Path:
    """Save the 1-based design arrays to ``nsd_expdesign.mat`` with the real 2-D shapes (1,N), (8,M), (1,K).

    ``scipy.io.savemat`` with 2-D arrays keeps these shapes on ``loadmat`` (data-formats.md 1.3, 5).
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


def _rep_trials(subjectim: np.ndarray, masterordering: np.ndarray, subject: int, n_trials: int) -> dict[int, list[int]]:
    """0-based nsd id -> sorted 1-based trial numbers among the first ``n_trials`` trials of ``subject``."""
    mo = np.asarray(masterordering).ravel().astype(int)
    if n_trials > len(mo):
        raise ValueError(f"{n_trials} trials asked for subject {subject} but masterordering has {len(mo)}")
    nsd0 = np.asarray(subjectim).astype(int)[subject - 1, mo[:n_trials] - 1] - 1
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
    """Write ``nsd_stim_info_merged.csv`` with the real header, computed from the design (data-formats.md 1.4).

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
        for image, trials in _rep_trials(si, masterordering, subject, n_ses * trials_per_session).items():
            if len(trials) > _REP_COLUMNS:
                raise ValueError(
                    f"image {image} is shown {len(trials)} times to subject {subject}; the CSV has {_REP_COLUMNS} rep columns"
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
    """Write uint8 RGB images (N, H, W, 3) as ``imgBrick`` in ``nsd_stimuli.hdf5`` (data-formats.md 1.6)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"imgBrick must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    path = _mkparent(stimuli_path(root))
    with h5py.File(path, "w") as f:
        f.create_dataset("imgBrick", data=images)
    return path


def _psc_to_int16(psc: np.ndarray) -> np.ndarray:
    """PSC -> int16 PSC x 300, rounded and clipped; NaN becomes 0 like the zeroed non-brain voxels (data-formats.md 1.7)."""
    scaled = np.nan_to_num(np.asarray(psc, dtype=np.float64) * _PSC_SCALE, nan=0.0)
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
    i.e. MATLAB's X x Y x Z x T seen from h5py (data-formats.md 1.7, 5).
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
    """Plain-text label table, ``<id> <name>`` per line, first line ``0 Unknown`` (data-formats.md 1.9)."""
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

    Volumes hold -1 outside the brain, 0 for unlabelled cortex and k for label k (data-formats.md 1.9).
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
    """Write the float noise-ceiling SNR volume ``ncsnr.nii.gz`` (not x300, data-formats.md 1.8)."""
    path = _mkparent(ncsnr_path(root, subject, space, beta_version))
    nib.save(nib.Nifti1Image(np.asarray(ncsnr, dtype=np.float32), np.asarray(affine, dtype=np.float64)), path)
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
    """Write ``{lh,rh}.betas_sessionNN.mgh``: float32 PSC, shape (V, 1, 1, T), no x300 (data-formats.md 1.7, 5).

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
    """Write ``{lh,rh}.ncsnr.mgh`` from 'lh'/'rh' -> (V,) float arrays (data-formats.md 1.8)."""
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


# ---------------------------------------------------------------------------------------------------------------
# Design, trials and images (data-formats.md 1.3, 1.6, 4)


def _require(path: Path, what: str, hint: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}. {hint}")
    return path


def read_expdesign(root: PathLike) -> dict[str, np.ndarray]:
    """``masterordering`` (N,), ``subjectim`` (8, M) and ``sharedix`` (K,) as int arrays, still 1-based (data-formats.md 1.3)."""
    path = _require(expdesign_path(root), "NSD design file", "Download nsddata/experiments/nsd/nsd_expdesign.mat.")
    try:
        d = scipy.io.loadmat(path)
    except _READ_ERRORS as exc:
        raise NSDFileError(f"cannot read {path} ({exc}); download it again") from exc
    return {
        "masterordering": d["masterordering"].ravel().astype(int),
        "subjectim": np.atleast_2d(d["subjectim"]).astype(int),
        "sharedix": d["sharedix"].ravel().astype(int),
    }


def _trial_table(
    design: Mapping[str, np.ndarray], subject: int, n_sessions: int, trials_per_session: int
) -> pd.DataFrame:
    _subj(subject)
    mo = design["masterordering"]
    n = int(n_sessions) * int(trials_per_session)
    if n_sessions < 1:
        raise ValueError(f"n_sessions must be >= 1, got {n_sessions}")
    if n > len(mo):
        raise ValueError(
            f"subject {subject}: {n_sessions} sessions x {trials_per_session} trials = {n} trials, but masterordering "
            f"in nsd_expdesign.mat has only {len(mo)}; lower n_sessions in the config"
        )
    nsd0 = design["subjectim"][subject - 1, mo[:n] - 1] - 1
    if nsd0.min() < 0:
        raise ValueError(f"subjectim in nsd_expdesign.mat has no images for subject {subject}")
    t = np.arange(n)
    return pd.DataFrame(
        {
            "trial": t,
            "session": t // trials_per_session + 1,
            "trial_in_session": t % trials_per_session,
            "nsd_id": nsd0,
        }
    )


def trial_table(
    root: PathLike, subject: int, n_sessions: int, *, trials_per_session: int = TRIALS_PER_SESSION
) -> pd.DataFrame:
    """One row per trial of ``subject``'s first ``n_sessions`` sessions.

    Columns: ``trial`` (0-based), ``session`` (1-based), ``trial_in_session`` (index into the betas' trial axis) and
    ``nsd_id`` (0-based 73k index = ``imgBrick`` row), via
    ``subjectim[s-1, masterordering[t]-1] - 1`` (data-formats.md 1.3, 4).
    """
    return _trial_table(read_expdesign(root), subject, n_sessions, trials_per_session)


def stimulus_ids(
    root: PathLike, subjects: Mapping[int, int], *, trials_per_session: int = TRIALS_PER_SESSION
) -> np.ndarray:
    """Sorted unique 0-based nsd ids shown to the given subjects (subject -> n_sessions)."""
    design = read_expdesign(root)
    ids = [_trial_table(design, s, n, trials_per_session)["nsd_id"].to_numpy() for s, n in subjects.items()]
    return np.unique(np.concatenate(ids)) if ids else np.array([], dtype=int)


def read_images(root: PathLike, nsd_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """uint8 images (n, H, W, 3) from ``imgBrick`` in the order of ``nsd_ids`` (0-based, repeats allowed).

    h5py fancy indexing needs strictly increasing indices, so rows are read sorted and unique, then mapped back
    (data-formats.md 1.6).
    """
    brick = ImageBrick(root)
    try:
        return brick(nsd_ids)
    finally:
        brick.close()


class ImageBrick:
    """``imgBrick`` reader that keeps the HDF5 file open, one handle per process.

    The handle opens on first use and again in any other process (a DataLoader worker, forked or spawned), never
    travelling between processes, so parallel workers each read through their own handle. Ids as ``read_images``.
    """

    def __init__(self, root: PathLike):
        self.root = root
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {"root": self.root, "_file": None, "_pid": None}

    def _brick(self) -> h5py.Dataset:
        if self._file is None or self._pid != os.getpid():
            path = _require(
                stimuli_path(self.root), "NSD image file", "Download nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5."
            )
            try:
                self._file, self._pid = h5py.File(path, "r"), os.getpid()
                return self._file["imgBrick"]
            except (OSError, KeyError) as exc:
                raise NSDFileError(f"cannot read imgBrick from {path} ({exc}); download it again") from exc
        return self._file["imgBrick"]

    def __call__(self, nsd_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        brick = self._brick()
        path = stimuli_path(self.root)
        ids = np.asarray(nsd_ids, dtype=np.int64).ravel()
        bad = ids[(ids < 0) | (ids >= brick.shape[0])]
        if bad.size:
            raise ValueError(
                f"nsd ids {sorted(set(bad.tolist()))} are not in {path} (imgBrick has {brick.shape[0]} images, "
                "ids are 0-based); the image file may be incomplete or the ids wrong"
            )
        if ids.size == 0:
            return np.zeros((0, *brick.shape[1:]), dtype=np.uint8)
        uniq, inverse = np.unique(ids, return_inverse=True)
        try:
            if uniq[-1] - uniq[0] + 1 == uniq.size:  # a contiguous run: one hyperslab read, much faster
                rows = brick[int(uniq[0]) : int(uniq[-1]) + 1]
            else:
                rows = brick[uniq]
        except (OSError, KeyError) as exc:
            raise NSDFileError(f"cannot read imgBrick from {path} ({exc}); download it again") from exc
        return rows[inverse]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None


# ---------------------------------------------------------------------------------------------------------------
# ROIs (data-formats.md 1.9)


def read_ctab(path: PathLike) -> dict[int, str]:
    """Label id -> name from a ``.ctab`` (``<id> <name>`` per line; names stripped of trailing tabs)."""
    path = Path(path)
    _require(path, "ROI label table", "Download the .ctab that sits beside the atlas in nsddata/freesurfer.")
    table = {}
    for line in path.read_text().splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2:
            table[int(parts[0])] = parts[1].strip()
    return table


def _roi_groups(atlas: str, table: Mapping[int, str]) -> dict[str, list[int]]:
    """ROI name -> label ids; prf-visualrois halves V1v/V1d, V2v/V2d, V3v/V3d merge into V1, V2, V3."""
    groups: dict[str, list[int]] = {}
    for k, name in sorted(table.items()):
        if k <= 0:
            continue
        if atlas == "prf-visualrois":
            name = _VISUAL_HALVES.sub(r"\1", name)
        groups.setdefault(name, []).append(k)
    return groups


def _requested_groups(
    atlas: str, wanted: Sequence[str] | str, table: Mapping[int, str], ctab: Path
) -> dict[str, list[int]]:
    groups = _roi_groups(atlas, table)
    if wanted == "all":
        return groups
    if isinstance(wanted, str):
        wanted = [wanted]
    unknown = [name for name in wanted if name not in groups]
    if unknown:
        raise ValueError(
            f"ROIs {unknown} are not in atlas {atlas!r} ({ctab}); available: {sorted(groups)}. Fix the rois entry in the config."
        )
    return {name: groups[name] for name in wanted}


def _read_nifti(path: Path, what: str, hint: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """(data, affine, header) of a NIfTI, with errors naming the file for missing or truncated files."""
    _require(path, what, hint)
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj)
    except _READ_ERRORS as exc:
        raise NSDFileError(
            f"cannot read {what} {path}: {type(exc).__name__}: {exc}. The file is truncated or corrupt; download it again"
        ) from exc
    return data, img.affine, img.header


def _read_label_volume(path: Path, what: str, hint: str) -> tuple[np.ndarray, np.ndarray]:
    data, affine, _ = _read_nifti(path, what, hint)
    return np.rint(data).astype(int), affine


def _read_mgh(path: Path, what: str, hint: str) -> np.ndarray:
    """MGH data reshaped to (V, ...) without singleton axes 1-2 (shape (V, 1, 1[, T]))."""
    _require(path, what, hint)
    try:
        data = np.asarray(nib.load(path).dataobj)
    except _READ_ERRORS as exc:
        raise NSDFileError(
            f"cannot read {what} {path}: {exc}. The file is truncated or corrupt; download it again"
        ) from exc
    return data.reshape(data.shape[0], *data.shape[3:])


@dataclass
class _Atlas:
    """One atlas's labels at the candidate voxels, with hemisphere labels."""

    name: str
    combined: np.ndarray
    hemi: dict[str, np.ndarray]
    table: dict[int, str]
    files: list[Path]
    n_lh: int = 0

    @property
    def groups(self) -> dict[str, list[int]]:
        return _roi_groups(self.name, self.table)


def _volume_atlas(root: PathLike, subject: int, atlas: str, space: str) -> tuple[_Atlas, np.ndarray]:
    hint = (
        f"Download nsddata/ppdata/subj{subject:02d}/{space}/roi/{{,lh.,rh.}}{atlas}.nii.gz "
        "or remove the atlas from the config's rois."
    )
    files = [roi_path(root, subject, atlas, h, space) for h in (None, *HEMIS)]
    vols, affine = [], None
    for path in files:
        vol, aff = _read_label_volume(path, f"ROI file of atlas {atlas!r}", hint)
        if vols and vol.shape != vols[0].shape:
            raise ValueError(f"{path} has shape {vol.shape} but {files[0]} has {vols[0].shape}")
        vols.append(vol)
        affine = aff if affine is None else affine
    ctab = ctab_path(root, subject, atlas)
    table = read_ctab(ctab)
    return _Atlas(atlas, vols[0], dict(zip(HEMIS, vols[1:], strict=True)), table, files + [ctab]), affine


def _surface_atlas(root: PathLike, atlas: str) -> _Atlas:
    hint = (
        f"Download nsddata/freesurfer/fsaverage/label/{{lh,rh}}.{atlas}.mgz or remove the atlas from the config's rois."
    )
    files = [fsaverage_label_path(root, atlas, h) for h in HEMIS]
    hemi = {
        h: np.rint(_read_mgh(p, f"fsaverage label of atlas {atlas!r}", hint)).astype(int).ravel()
        for h, p in zip(HEMIS, files, strict=True)
    }
    combined = np.concatenate([hemi["lh"], hemi["rh"]])
    n = len(hemi["lh"])
    masked = {
        "lh": np.concatenate([hemi["lh"], np.zeros(len(hemi["rh"]), int)]),
        "rh": np.concatenate([np.zeros(n, int), hemi["rh"]]),
    }
    ctab = ctab_path(root, None, atlas)
    return _Atlas(atlas, combined, masked, read_ctab(ctab), files + [ctab], n_lh=n)


def _select(
    atlases: list[_Atlas], rois: Mapping[str, Sequence[str] | str], log: Callable[[str], None]
) -> tuple[np.ndarray, pd.DataFrame]:
    """Flat indices of the union of requested ROIs, and per-voxel roi, atlas, hemi and memberships.

    A voxel labelled by several requested atlases takes ``roi``/``atlas``/``hemi`` from the first one in ``rois``
    order; ``memberships`` lists all of them as ``atlas/roi`` joined by ';'.
    """
    picks = []
    union = np.zeros(atlases[0].combined.size, dtype=bool)
    for atlas in atlases:
        wanted = _requested_groups(atlas.name, rois[atlas.name], atlas.table, atlas.files[-1])
        flat = atlas.combined.ravel()
        code = np.full(flat.shape, -1)
        names = list(wanted)
        for c, name in enumerate(names):
            hit = np.isin(flat, wanted[name])
            if not hit.any():
                log(f"ROI {atlas.name}/{name} has no voxels in {atlas.files[0]}")
            code[hit] = c
        union |= code >= 0
        picks.append((atlas, names, code))
    flat_idx = np.flatnonzero(union)
    if flat_idx.size == 0:
        raise ValueError(f"the requested ROIs {dict(rois)} select no voxels")
    n = flat_idx.size
    roi = np.full(n, "", dtype=object)
    atlas_col = np.full(n, "", dtype=object)
    hemi = np.full(n, "", dtype=object)
    memberships = [[] for _ in range(n)]
    for atlas, names, code in picks:
        c = code[flat_idx]
        lh = atlas.hemi["lh"].ravel()[flat_idx] > 0
        rh = atlas.hemi["rh"].ravel()[flat_idx] > 0
        labelled = c >= 0
        ambiguous = labelled & (lh == rh)
        if ambiguous.any():
            raise ValueError(
                f"{int(ambiguous.sum())} voxels labelled in {atlas.files[0]} are labelled in both or neither of "
                f"{atlas.files[1]} and {atlas.files[2]}; the hemisphere files do not match the combined file, download them again"
            )
        first = labelled & (roi == "")
        roi[first] = np.array(names, dtype=object)[c[first]]
        atlas_col[first] = atlas.name
        hemi[first] = np.where(lh[first], "lh", "rh")
        for v in np.flatnonzero(labelled):
            memberships[v].append(f"{atlas.name}/{names[c[v]]}")
    table = pd.DataFrame(
        {
            "hemi": hemi.astype(str),
            "roi": roi.astype(str),
            "atlas": atlas_col.astype(str),
            "memberships": [";".join(m) for m in memberships],
        }
    )
    return flat_idx, table


def _v1_centroids(
    atlas: _Atlas | None, coords_of: Callable[[np.ndarray], np.ndarray], missing_hint: str
) -> dict[str, np.ndarray]:
    """Centroid (mm) of V1 (V1v + V1d of prf-visualrois) per hemisphere."""
    if atlas is None:
        raise ValueError(missing_hint)
    ids = atlas.groups.get("V1")
    if not ids:
        raise ValueError(f"{atlas.files[-1]} has no V1v/V1d labels, so V1 is missing. {missing_hint}")
    out = {}
    for hemi in HEMIS:
        where = np.flatnonzero(np.isin(atlas.hemi[hemi].ravel(), ids))
        if where.size:
            out[hemi] = coords_of(where).mean(axis=0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Betas (data-formats.md 1.7)


def _missing_session_hint(subject: int, session: int) -> str:
    return (
        f"Session {session} of subject {subject} is missing: n_sessions for subject {subject} in the config may be "
        f"larger than the sessions available (NSD completed {COMPLETED_SESSIONS[subject]}) or the download is incomplete."
    )


def _check_trials(path: Path, n_trials: int, expected: int) -> None:
    if n_trials != expected:
        raise ValueError(
            f"{path} has {n_trials} trials, expected {expected} (750 in real NSD sessions): the file is not a complete "
            "NSD session, or the dataset's trials_per_session in the config does not match this tree"
        )


def _session_nifti(
    path: Path, subject: int, session: int, ijk: tuple[np.ndarray, ...], grid: tuple, n_trials: int
) -> np.ndarray:
    """(T, n_voxels) int16 betas of the selected voxels from a NIfTI (X, Y, Z, T), read a block of trials at a time.

    The trial axis is the slowest in the file (Fortran order), so each block is one contiguous byte range of the
    gzip stream; with the file kept open the blocks decompress the stream once, front to back. Reading the whole
    session at once would hold it twice (nibabel reads a gzip stream into bytes, then copies it: 2.1 GB for subj01).
    """
    _require(path, f"betas of session {session}", _missing_session_hint(subject, session))
    try:
        img = nib.load(path, keep_file_open=True)
    except _READ_ERRORS as exc:
        raise NSDFileError(
            f"cannot read betas {path}: {exc}. The file is truncated or corrupt; download it again"
        ) from exc
    if tuple(img.shape[:3]) != grid or len(img.shape) != 4:
        raise ValueError(f"{path} has shape {img.shape}; expected {grid} + (trials,) to match the ROI files")
    _check_trials(path, img.shape[3], n_trials)
    slope, inter = img.header.get_slope_inter()
    if not ((slope is None and inter is None) or (slope == 1 and inter == 0)):
        raise ValueError(f"{path} has scl_slope/inter ({slope}, {inter}); NSD betas are unscaled int16 (PSC x 300)")
    if img.get_data_dtype() != np.int16:
        raise ValueError(f"{path} holds {img.get_data_dtype()}; NSD volume betas are int16 (PSC x 300)")
    out = np.empty((img.shape[3], ijk[0].size), dtype=np.int16)
    step = max(1, _NIFTI_BLOCK_BYTES // (2 * int(np.prod(grid))))
    try:
        for t0 in range(0, img.shape[3], step):
            block = np.asarray(img.dataobj[..., t0 : t0 + step])
            out[t0 : t0 + block.shape[3]] = block[ijk].T
    except _READ_ERRORS as exc:
        raise NSDFileError(
            f"cannot read betas {path}: {type(exc).__name__}: {exc}. The file is truncated or corrupt; download it again"
        ) from exc
    return out


def _session_hdf5(
    path: Path, subject: int, session: int, ijk: tuple[np.ndarray, ...], grid: tuple, n_trials: int
) -> np.ndarray:
    """(T, n_voxels) int16 betas from dataset ``betas`` (T, Z, Y, X), read one z-plane box at a time."""
    _require(path, f"betas of session {session}", _missing_session_hint(subject, session))
    i, j, k = ijk
    try:
        with h5py.File(path, "r") as f:
            ds = f["betas"]
            if ds.ndim != 4 or tuple(ds.shape[1:]) != grid[::-1]:
                raise ValueError(
                    f"{path} dataset 'betas' has shape {ds.shape}; expected (trials,) + {grid[::-1]} (T, Z, Y, X)"
                )
            _check_trials(path, ds.shape[0], n_trials)
            if ds.dtype != np.int16:
                raise ValueError(f"{path} holds {ds.dtype}; NSD volume betas are int16 (PSC x 300)")
            out = np.empty((ds.shape[0], i.size), dtype=np.int16)
            for z in np.unique(k):
                sel = np.flatnonzero(k == z)
                j0, j1, i0, i1 = j[sel].min(), j[sel].max() + 1, i[sel].min(), i[sel].max() + 1
                box = ds[:, int(z), j0:j1, i0:i1]
                out[:, sel] = box[:, j[sel] - j0, i[sel] - i0]
    except (OSError, KeyError) as exc:
        raise NSDFileError(
            f"cannot read betas {path}: {exc}. The file is truncated or corrupt; download it again"
        ) from exc
    return out


def _session_mgh(
    paths: Mapping[str, Path], subject: int, session: int, vertices: Mapping[str, np.ndarray], n_trials: int
) -> np.ndarray:
    """(T, n_vertices) float32 PSC from ``{lh,rh}.betas_sessionNN.mgh`` (already PSC, not x300)."""
    parts = []
    for hemi in HEMIS:
        data = _read_mgh(paths[hemi], f"{hemi} betas of session {session}", _missing_session_hint(subject, session))
        if data.ndim != 2:
            raise ValueError(f"{paths[hemi]} has shape {data.shape}; expected (V, 1, 1, trials)")
        _check_trials(paths[hemi], data.shape[1], n_trials)
        parts.append(data[vertices[hemi]].astype(np.float32).T)
    return np.concatenate(parts, axis=1)


def noise_ceiling(ncsnr: np.ndarray, n_repeats: np.ndarray | int) -> np.ndarray:
    """Noise ceiling in percent, ``100 * ncsnr**2 / (ncsnr**2 + 1/n)`` (data-formats.md 1.8).

    ``n_repeats`` is the number of trials averaged per image: a scalar, or one count per image of the evaluated
    set, in which case 1/n is replaced by the mean of 1/n_i, which equals the Algonauts ``(A/3 + B/2 + C/1)/(A+B+C)``.
    """
    n = np.atleast_1d(np.asarray(n_repeats, dtype=np.float64))
    if n.size == 0 or (n < 1).any():
        raise ValueError("n_repeats must hold counts >= 1")
    snr2 = np.asarray(ncsnr, dtype=np.float64) ** 2
    return 100.0 * snr2 / (snr2 + np.mean(1.0 / n))


def _zscore(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column z-score (ddof=0) of (T, n) PSC, and a mask of columns that are NaN or constant."""
    bad = np.isnan(x).any(axis=0) | (x.max(axis=0) == x.min(axis=0))
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[bad | ~np.isfinite(std) | (std == 0)] = 1.0
    return ((x - mean) / std).astype(np.float32), bad


def load_subject(
    root: PathLike,
    subject: int,
    n_sessions: int,
    rois: Mapping[str, Sequence[str] | str],
    *,
    fmt: str = "nii.gz",
    space: str = "func1pt8mm",
    beta_version: str = BETA_VERSION,
    strict: bool = False,
    trials_per_session: int | None = None,
    log: Callable[[str], None] | None = None,
) -> FMRITargets:
    """Load one subject's fMRI targets for the voxels in the union of the requested ROIs.

    ``rois`` maps atlas -> ROI names or ``"all"``; prf-visualrois halves merge into V1, V2, V3 (hV4 stays).
    Sessions are streamed one at a time, keeping only the selected voxels: betas become PSC (int16 / 300),
    are z-scored per voxel within the session, then averaged over the repeats of each image (data-formats.md 1.7).
    Voxels NaN or constant in any session are dropped and counted through ``log``.

    ``voxels`` has columns i, j, k (array indices; for fsaverage i is the vertex and j = k = 0), x_mm, y_mm, z_mm
    (NIfTI affine of the ROI files, or the fsaverage white surface), hemi (from the lh./rh. ROI files), roi and
    atlas (the first requested atlas that labels the voxel), ncsnr, noise_ceiling (percent, using the repeat
    counts of all returned images; recompute for a test subset with :func:`noise_ceiling`), distance_v1 (mm from
    the V1 centroid of the same hemisphere) and memberships (every ``atlas/roi`` label, ';'-joined).
    ``shared`` marks the shared1000 images (``sharedix``).

    ``space="fsaverage"`` reads ``{lh,rh}.betas_sessionNN.mgh`` whatever ``fmt`` says. ``trials_per_session``
    defaults to the trial axis of the files (real data: 750); ``strict=True`` requires 750 trials, at most the
    sessions the subject completed, and the subject's real func1pt8mm grid.
    """
    log = log or _LOG.warning
    design = read_expdesign(root)
    if strict and n_sessions > COMPLETED_SESSIONS[subject]:
        raise ValueError(
            f"subject {subject} completed {COMPLETED_SESSIONS[subject]} sessions but n_sessions is {n_sessions}; lower it in the config"
        )
    if space == "fsaverage":
        table, reader, ncsnr, n_trials = _fsaverage_selection(root, subject, rois, beta_version, log)
    else:
        table, reader, ncsnr, n_trials = _volume_selection(root, subject, rois, fmt, space, beta_version, strict, log)
    tps = int(trials_per_session or n_trials)
    if strict and tps != TRIALS_PER_SESSION:
        raise ValueError(f"strict mode: sessions must have {TRIALS_PER_SESSION} trials, the betas have {tps}")
    trials = _trial_table(design, subject, n_sessions, tps)
    nsd_ids = np.unique(trials["nsd_id"].to_numpy())
    image_of_trial = np.searchsorted(nsd_ids, trials["nsd_id"].to_numpy())
    n_repeats = np.bincount(image_of_trial, minlength=nsd_ids.size)

    Y = np.zeros((nsd_ids.size, len(table)), dtype=np.float32)
    bad = np.zeros(len(table), dtype=bool)
    bad_per_session = {}
    for session in range(1, n_sessions + 1):
        rows = trials["session"].to_numpy() == session
        z, bad_s = _zscore(reader(session, tps))
        bad |= bad_s
        if bad_s.any():
            bad_per_session[session] = int(bad_s.sum())
        img = image_of_trial[rows]
        order = np.argsort(img, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(img[order]) != 0])
        Y[img[order][starts]] += np.add.reduceat(z[order], starts, axis=0)
        del z
    Y /= n_repeats[:, None].astype(np.float32)

    if bad.any():
        log(
            f"subject {subject}: excluded {int(bad.sum())} of {bad.size} voxels that are NaN or constant in at least "
            f"one session (voxels per session: {bad_per_session})"
        )
    if bad.all():
        raise ValueError(f"subject {subject}: every selected voxel is NaN or constant in some session")
    table["ncsnr"] = ncsnr.astype(np.float64)
    table["noise_ceiling"] = noise_ceiling(table["ncsnr"].to_numpy(), n_repeats)
    keep = ~bad
    shared = np.isin(nsd_ids, design["sharedix"] - 1)
    table = table[[*_VOXEL_COLUMNS, "memberships"]]
    return FMRITargets(
        Y=Y if keep.all() else np.ascontiguousarray(Y[:, keep]),
        nsd_ids=nsd_ids,
        n_repeats=n_repeats,
        shared=shared,
        voxels=table.loc[keep].reset_index(drop=True),
        subject=subject,
    )


def _distance_v1(table: pd.DataFrame, centroids: Mapping[str, np.ndarray], hint: str) -> np.ndarray:
    xyz = table[["x_mm", "y_mm", "z_mm"]].to_numpy()
    out = np.full(len(table), np.nan)
    for hemi in HEMIS:
        rows = table["hemi"].to_numpy() == hemi
        if not rows.any():
            continue
        if hemi not in centroids:
            raise ValueError(f"V1 has no voxels in the {hemi} hemisphere. {hint}")
        out[rows] = np.linalg.norm(xyz[rows] - centroids[hemi], axis=1)
    return out


def _volume_selection(
    root: PathLike,
    subject: int,
    rois: Mapping[str, Sequence[str] | str],
    fmt: str,
    space: str,
    beta_version: str,
    strict: bool,
    log: Callable[[str], None],
) -> tuple[pd.DataFrame, Callable[[int, int], np.ndarray], np.ndarray, int]:
    """Voxel table, a per-session reader, ncsnr at the voxels, and the trial count of session 1 (volume spaces)."""
    if not rois:
        raise ValueError("rois is empty: give at least one atlas -> ROI names")
    loaded = [_volume_atlas(root, subject, name, space) for name in rois]
    atlases = [atlas for atlas, _ in loaded]
    affine = loaded[0][1]
    grid = atlases[0].combined.shape
    for atlas in atlases[1:]:
        if atlas.combined.shape != grid:
            raise ValueError(f"{atlas.files[0]} has shape {atlas.combined.shape} but {atlases[0].files[0]} has {grid}")
    if strict and space == "func1pt8mm" and grid != FUNC1PT8MM_GRID[subject]:
        raise ValueError(
            f"{atlases[0].files[0]} has grid {grid}; subject {subject}'s func1pt8mm grid is {FUNC1PT8MM_GRID[subject]}"
        )

    flat_idx, table = _select(atlases, rois, log)
    ijk = np.unravel_index(flat_idx, grid)
    xyz = nib.affines.apply_affine(affine, np.column_stack(ijk))
    table.insert(0, "i", ijk[0])
    table.insert(1, "j", ijk[1])
    table.insert(2, "k", ijk[2])
    table.insert(3, "x_mm", xyz[:, 0])
    table.insert(4, "y_mm", xyz[:, 1])
    table.insert(5, "z_mm", xyz[:, 2])

    visual = next((a for a in atlases if a.name == "prf-visualrois"), None)
    v1_path = roi_path(root, subject, "prf-visualrois", None, space)
    hint = (
        f"distance_v1 needs V1 from {v1_path} (with its lh./rh. files and "
        f"{ctab_path(root, subject, 'prf-visualrois')}); download them or add prf-visualrois to the config's rois"
    )
    if visual is None and v1_path.exists():
        visual, _ = _volume_atlas(root, subject, "prf-visualrois", space)
        if visual.combined.shape != grid:
            raise ValueError(f"{v1_path} has shape {visual.combined.shape} but {atlases[0].files[0]} has {grid}")
    centroids = _v1_centroids(
        visual,
        lambda flat: nib.affines.apply_affine(affine, np.column_stack(np.unravel_index(flat, grid))),
        hint,
    )
    table["distance_v1"] = _distance_v1(table, centroids, hint)

    nc_file = ncsnr_path(root, subject, space, beta_version)
    nc, _, _ = _read_nifti(
        nc_file,
        "noise-ceiling SNR",
        f"Download nsddata_betas/ppdata/subj{subject:02d}/{space}/{beta_version}/ncsnr.nii.gz.",
    )
    nc = np.asarray(nc, dtype=np.float64)
    if nc.ndim == 4 and nc.shape[3] == 1:
        nc = nc[..., 0]
    if nc.shape != grid:
        raise ValueError(f"{nc_file} has shape {nc.shape}; expected {grid} like the ROI files")

    first = betas_path(root, subject, 1, fmt, space, beta_version)
    _require(first, "betas of session 1", _missing_session_hint(subject, 1))
    n_trials = _trial_count(first, fmt)
    read = _session_nifti if fmt == "nii.gz" else _session_hdf5

    def _volume_reader(session: int, tps: int) -> np.ndarray:
        raw = read(betas_path(root, subject, session, fmt, space, beta_version), subject, session, ijk, grid, tps)
        return raw.astype(np.float32) / np.float32(_PSC_SCALE)

    return table, _volume_reader, nc[ijk], n_trials


def _trial_count(path: Path, fmt: str) -> int:
    """Length of the trial axis from the header only."""
    try:
        if fmt == "nii.gz":
            shape = nib.load(path).shape
            return int(shape[3]) if len(shape) == 4 else 0
        with h5py.File(path, "r") as f:
            return int(f["betas"].shape[0])
    except (*_READ_ERRORS, KeyError) as exc:
        raise NSDFileError(
            f"cannot read betas {path}: {exc}. The file is truncated or corrupt; download it again"
        ) from exc


def _fsaverage_selection(
    root: PathLike,
    subject: int,
    rois: Mapping[str, Sequence[str] | str],
    beta_version: str,
    log: Callable[[str], None],
) -> tuple[pd.DataFrame, Callable[[int, int], np.ndarray], np.ndarray, int]:
    """Vertex table, a per-session reader, ncsnr at the vertices and the trial count (fsaverage space)."""
    if not rois:
        raise ValueError("rois is empty: give at least one atlas -> ROI names")
    atlases = [_surface_atlas(root, name) for name in rois]
    n_lh = atlases[0].n_lh
    flat_idx, table = _select(atlases, rois, log)
    coords = []
    for hemi in HEMIS:
        path = _require(
            fsaverage_surface_path(root, hemi),
            "fsaverage surface",
            "Download nsddata/freesurfer/fsaverage/surf.",
        )
        try:
            xyz, _ = nib.freesurfer.read_geometry(path)
        except _READ_ERRORS as exc:
            raise NSDFileError(f"cannot read surface {path}: {exc}; download it again") from exc
        coords.append(xyz)
    if len(coords[0]) != n_lh or len(coords[0]) + len(coords[1]) != atlases[0].combined.size:
        raise ValueError("fsaverage surfaces and labels have different vertex counts")
    all_xyz = np.concatenate(coords)
    vertex = np.where(flat_idx < n_lh, flat_idx, flat_idx - n_lh)
    xyz = all_xyz[flat_idx]
    table.insert(0, "i", vertex)
    table.insert(1, "j", 0)
    table.insert(2, "k", 0)
    table.insert(3, "x_mm", xyz[:, 0])
    table.insert(4, "y_mm", xyz[:, 1])
    table.insert(5, "z_mm", xyz[:, 2])
    hemi_of = np.where(flat_idx < n_lh, "lh", "rh")
    if (hemi_of != table["hemi"].to_numpy()).any():
        raise ValueError("fsaverage label files disagree on hemispheres")

    visual = next((a for a in atlases if a.name == "prf-visualrois"), None)
    hint = (
        f"distance_v1 needs V1 from {fsaverage_label_path(root, 'prf-visualrois', 'lh')} (and rh., and "
        f"{ctab_path(root, None, 'prf-visualrois')}); download them or add prf-visualrois to the config's rois"
    )
    if visual is None and all(fsaverage_label_path(root, "prf-visualrois", h).exists() for h in HEMIS):
        visual = _surface_atlas(root, "prf-visualrois")
    table["distance_v1"] = _distance_v1(table, _v1_centroids(visual, lambda flat: all_xyz[flat], hint), hint)

    vertices = {"lh": vertex[hemi_of == "lh"], "rh": vertex[hemi_of == "rh"]}
    nc = np.concatenate(
        [
            _read_mgh(
                fsaverage_ncsnr_path(root, subject, h, beta_version),
                f"{h} noise-ceiling SNR",
                "Download the fsaverage ncsnr.mgh files.",
            ).reshape(-1)[vertices[h]]
            for h in HEMIS
        ]
    )
    first = _require(
        fsaverage_betas_path(root, subject, 1, "lh", beta_version),
        "lh betas of session 1",
        _missing_session_hint(subject, 1),
    )
    try:
        n_trials = int(nib.load(first).shape[-1])
    except _READ_ERRORS as exc:
        raise NSDFileError(
            f"cannot read betas {first}: {exc}. The file is truncated or corrupt; download it again"
        ) from exc

    def _mgh_reader(session: int, tps: int) -> np.ndarray:
        paths = {h: fsaverage_betas_path(root, subject, session, h, beta_version) for h in HEMIS}
        return _session_mgh(paths, subject, session, vertices, tps)

    return table, _mgh_reader, nc, n_trials
