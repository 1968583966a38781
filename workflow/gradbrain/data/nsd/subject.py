"""One NSD subject's fMRI targets: the selected voxels' betas, z-scored per session and averaged over repeats.

``load_subject`` turns a local copy of the bucket (``root``) into model-ready targets with the voxels' coordinates,
hemisphere, ROI, noise ceiling and distance from V1; sessions are streamed one at a time, so only the selected voxels
of one session are held (docs/data-formats.md 1.6-1.10).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd

from gradbrain.data.nsd.mni import check_sides, mni_mm, read_mni_transform
from gradbrain.data.nsd.paths import (
    BETA_VERSION,
    COMPLETED_SESSIONS,
    FUNC1PT8MM_GRID,
    HEMIS,
    PSC_SCALE,
    TRIALS_PER_SESSION,
    PathLike,
    betas_path,
    check_distance_space,
    ctab_path,
    fsaverage_betas_path,
    fsaverage_label_path,
    fsaverage_ncsnr_path,
    fsaverage_surface_path,
    ncsnr_path,
    roi_path,
)
from gradbrain.data.nsd.read import (
    READ_ERRORS,
    NSDFileError,
    design_trials,
    missing_session_hint,
    noise_ceiling,
    read_expdesign,
    read_mgh,
    read_nifti,
    read_session_hdf5,
    read_session_mgh,
    read_session_nifti,
    require,
    trial_count,
)
from gradbrain.data.nsd.rois import distance_v1, select_voxels, surface_atlas, v1_centroids, volume_atlas

_LOG = logging.getLogger(__name__)

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
    distance_space: str = "native",
) -> FMRITargets:
    """Load one subject's fMRI targets for the voxels in the union of the requested ROIs.

    ``rois`` maps atlas -> ROI names or ``"all"``; prf-visualrois halves merge into V1, V2, V3 (hV4 stays).
    Sessions are streamed one at a time, keeping only the selected voxels: betas become PSC (int16 / 300),
    are z-scored per voxel within the session, then averaged over the repeats of each image (docs/data-formats.md 1.6).
    Voxels NaN or constant in any session are dropped and counted through ``log``; voxels whose ncsnr is NaN are
    kept (with a NaN noise ceiling) and counted in a warning.

    ``voxels`` has columns i, j, k (array indices; for fsaverage i is the vertex and j = k = 0), x_mm, y_mm, z_mm
    (NIfTI affine of the ROI files, or the fsaverage white surface), hemi (from the lh./rh. ROI files), roi and
    atlas (the first requested atlas that labels the voxel), ncsnr, noise_ceiling (percent, using the repeat
    counts of all returned images; recompute for a test subset with :func:`noise_ceiling`), distance_v1 (mm from
    the V1 centroid of the same hemisphere, in ``distance_space``) and memberships (every ``atlas/roi`` label,
    ';'-joined). ``distance_space="mni"`` (volume spaces only) measures it between MNI coordinates from NSD's
    ``MNI-to-<space>`` transform (:mod:`gradbrain.data.nsd.mni`), as the paper does; x_mm, y_mm, z_mm stay in the
    subject's space, and selected voxels without an MNI location are dropped with a warning that counts them.
    ``shared`` marks the shared1000 images (``sharedix``).

    ``space="fsaverage"`` reads ``{lh,rh}.betas_sessionNN.mgh`` whatever ``fmt`` says. ``trials_per_session``
    defaults to the trial axis of session 1's file (real data: 750); a last session where the design ends holds
    the design's remaining trials (``read.n_trials``). ``strict=True`` requires 750 trials, at most the sessions
    the subject completed, and the subject's real func1pt8mm grid.
    """
    log = log or _LOG.warning
    check_distance_space(distance_space, space)
    design = read_expdesign(root)
    if strict and n_sessions > COMPLETED_SESSIONS[subject]:
        raise ValueError(
            f"subject {subject} completed {COMPLETED_SESSIONS[subject]} sessions but n_sessions is {n_sessions}; "
            "lower it in the config"
        )
    if space == "fsaverage":
        table, reader, ncsnr, n_trials = _fsaverage_selection(root, subject, rois, beta_version, log, strict)
    else:
        table, reader, ncsnr, n_trials = _volume_selection(
            root, subject, rois, fmt, space, beta_version, strict, log, distance_space
        )
    tps = int(trials_per_session or n_trials)
    if strict and tps != TRIALS_PER_SESSION:
        raise ValueError(f"strict mode: sessions must have {TRIALS_PER_SESSION} trials, the betas have {tps}")
    trials = design_trials(design, subject, n_sessions, tps)
    nsd_ids = np.unique(trials["nsd_id"].to_numpy())
    image_of_trial = np.searchsorted(nsd_ids, trials["nsd_id"].to_numpy())
    n_repeats = np.bincount(image_of_trial, minlength=nsd_ids.size)

    Y = np.zeros((nsd_ids.size, len(table)), dtype=np.float32)
    bad = np.zeros(len(table), dtype=bool)
    bad_per_session = {}
    for session in range(1, n_sessions + 1):
        rows = trials["session"].to_numpy() == session
        z, bad_s = _zscore(reader(session, int(rows.sum())))
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
    no_ceiling = int((np.isnan(ncsnr) & keep).sum())
    if no_ceiling:
        files = (
            [fsaverage_ncsnr_path(root, subject, h, beta_version) for h in HEMIS]
            if space == "fsaverage"
            else [ncsnr_path(root, subject, space, beta_version)]
        )
        _LOG.warning(
            "subject %d: %d of %d voxels have a NaN noise-ceiling SNR in %s; they are kept, with a NaN noise "
            "ceiling (docs/data-formats.md 1.8)",
            subject, no_ceiling, int(keep.sum()), " and ".join(map(str, files)),
        )  # fmt: skip
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


def _volume_selection(
    root: PathLike,
    subject: int,
    rois: Mapping[str, Sequence[str] | str],
    fmt: str,
    space: str,
    beta_version: str,
    strict: bool,
    log: Callable[[str], None],
    distance_space: str = "native",
) -> tuple[pd.DataFrame, Callable[[int, int], np.ndarray], np.ndarray, int]:
    """Voxel table, a per-session reader, ncsnr at the voxels, and the trial count of session 1 (volume spaces)."""
    if not rois:
        raise ValueError("rois is empty: give at least one atlas -> ROI names")
    loaded = [volume_atlas(root, subject, name, space) for name in rois]
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

    flat_idx, table = select_voxels(atlases, rois, log, strict)
    if distance_space == "mni":
        transform, transform_path = read_mni_transform(root, subject, space, grid)

        def coords_of(flat: np.ndarray) -> np.ndarray:
            return mni_mm(transform, np.unravel_index(flat, grid))

        mni = coords_of(flat_idx)
        located = np.isfinite(mni).all(axis=1)
        if not located.any():
            raise ValueError(f"no selected voxel has an MNI location in {transform_path}; download it again")
        if not located.all():
            _LOG.warning(
                "subject %d: dropped %d of %d selected voxels that have no MNI location in %s (value 9999: outside "
                "the mapped brain), since their distance from V1 in MNI space is undefined",
                subject, int((~located).sum()), located.size, transform_path,
            )  # fmt: skip
            flat_idx, mni = flat_idx[located], mni[located]
            table = table.loc[located].reset_index(drop=True)
    else:

        def coords_of(flat: np.ndarray) -> np.ndarray:
            return nib.affines.apply_affine(affine, np.column_stack(np.unravel_index(flat, grid)))

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
        visual, _ = volume_atlas(root, subject, "prf-visualrois", space)
        if visual.combined.shape != grid:
            raise ValueError(f"{v1_path} has shape {visual.combined.shape} but {atlases[0].files[0]} has {grid}")
    centroids = v1_centroids(visual, coords_of, hint)
    if distance_space == "mni":
        check_sides(centroids, transform_path)
    xyz_distance = mni if distance_space == "mni" else xyz
    table["distance_v1"] = distance_v1(xyz_distance, table["hemi"].to_numpy(), centroids, hint)

    nc_file = ncsnr_path(root, subject, space, beta_version)
    nc, _, _ = read_nifti(
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
    require(first, "betas of session 1", missing_session_hint(subject, 1))
    n_trials = trial_count(first, fmt)
    read = read_session_nifti if fmt == "nii.gz" else read_session_hdf5

    def _volume_reader(session: int, tps: int) -> np.ndarray:
        raw = read(betas_path(root, subject, session, fmt, space, beta_version), subject, session, ijk, grid, tps)
        return raw.astype(np.float32) / np.float32(PSC_SCALE)

    return table, _volume_reader, nc[ijk], n_trials


def _fsaverage_selection(
    root: PathLike,
    subject: int,
    rois: Mapping[str, Sequence[str] | str],
    beta_version: str,
    log: Callable[[str], None],
    strict: bool = False,
) -> tuple[pd.DataFrame, Callable[[int, int], np.ndarray], np.ndarray, int]:
    """Vertex table, a per-session reader, ncsnr at the vertices and the trial count (fsaverage space)."""
    if not rois:
        raise ValueError("rois is empty: give at least one atlas -> ROI names")
    atlases = [surface_atlas(root, name) for name in rois]
    n_lh = atlases[0].n_lh
    flat_idx, table = select_voxels(atlases, rois, log, strict)
    coords = []
    for hemi in HEMIS:
        path = require(
            fsaverage_surface_path(root, hemi),
            "fsaverage surface",
            "Download nsddata/freesurfer/fsaverage/surf.",
        )
        try:
            xyz, _ = nib.freesurfer.read_geometry(path)
        except READ_ERRORS as exc:
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
        visual = surface_atlas(root, "prf-visualrois")
    centroids = v1_centroids(visual, lambda flat: all_xyz[flat], hint)
    table["distance_v1"] = distance_v1(xyz, table["hemi"].to_numpy(), centroids, hint)

    vertices = {"lh": vertex[hemi_of == "lh"], "rh": vertex[hemi_of == "rh"]}
    nc = np.concatenate(
        [
            read_mgh(
                fsaverage_ncsnr_path(root, subject, h, beta_version),
                f"{h} noise-ceiling SNR",
                "Download the fsaverage ncsnr.mgh files.",
            ).reshape(-1)[vertices[h]]
            for h in HEMIS
        ]
    )
    first = require(
        fsaverage_betas_path(root, subject, 1, "lh", beta_version),
        "lh betas of session 1",
        missing_session_hint(subject, 1),
    )
    try:
        n_trials = int(nib.load(first).shape[-1])
    except READ_ERRORS as exc:
        raise NSDFileError(
            f"cannot read betas {first}: {exc}. The file is truncated or corrupt; download it again"
        ) from exc

    def _mgh_reader(session: int, tps: int) -> np.ndarray:
        paths = {h: fsaverage_betas_path(root, subject, session, h, beta_version) for h in HEMIS}
        return read_session_mgh(paths, subject, session, vertices, tps)

    return table, _mgh_reader, nc, n_trials
