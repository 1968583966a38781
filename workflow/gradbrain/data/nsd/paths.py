"""Where NSD's files lie in a local copy of the bucket, and the fixed facts of the dataset (docs/data-formats.md 1).

Light on purpose: the workflow reads this module while Snakemake builds the DAG (``required_files`` declares the
files of a pre-downloaded or downloaded root), so it imports nothing beyond the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PathLike = str | os.PathLike

BETA_VERSION = "betas_fithrf_GLMdenoise_RR"
"""The recommended beta version (b3), docs/data-formats.md 1.2."""

TRIALS_PER_SESSION = 750
"""Trials per NSD session (12 runs x 62/63 stimulus trials), docs/data-formats.md 1.10."""

COMPLETED_SESSIONS = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}
"""Sessions each subject completed (docs/data-formats.md 1.10); checked in strict mode."""

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
"""func1pt8mm (X, Y, Z) grid per subject (docs/data-formats.md 1.10); checked in strict mode."""

PSC_SCALE = 300.0
"""Volume betas are int16 percent signal change x 300 (docs/data-formats.md 1.6)."""

HEMIS = ("lh", "rh")

DISTANCE_SPACES = ("native", "mni")
"""Where ``distance_v1`` is measured: the subject's own space, or MNI through NSD's transform (docs/data-formats.md
1.11)."""

MNI_TRANSFORM_SPACE = {"func1pt8mm": "func1pt8", "func1mm": "func1pt0"}
"""NSD's name, in its transform files, of each volume space whose betas the workflow reads."""


def _subj(subject: int) -> str:
    if not 1 <= int(subject) <= 8:
        raise ValueError(f"NSD subjects are 1..8, got {subject}")
    return f"subj{int(subject):02d}"


def expdesign_path(root: PathLike) -> Path:
    """``nsd_expdesign.mat``: trial -> image design (docs/data-formats.md 1.3)."""
    return Path(root) / "nsddata/experiments/nsd/nsd_expdesign.mat"


def stim_info_path(root: PathLike) -> Path:
    """``nsd_stim_info_merged.csv``: one row per 73k image (docs/data-formats.md 1.4)."""
    return Path(root) / "nsddata/experiments/nsd/nsd_stim_info_merged.csv"


def stimuli_path(root: PathLike) -> Path:
    """``nsd_stimuli.hdf5`` holding ``imgBrick`` (docs/data-formats.md 1.5)."""
    return Path(root) / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"


def betas_path(
    root: PathLike,
    subject: int,
    session: int,
    fmt: str = "nii.gz",
    space: str = "func1pt8mm",
    beta_version: str = BETA_VERSION,
) -> Path:
    """Volume betas of one session, ``betas_sessionNN.{nii.gz,hdf5}`` (docs/data-formats.md 1.2)."""
    if fmt not in ("nii.gz", "hdf5"):
        raise ValueError(f"volume betas come as 'nii.gz' or 'hdf5', got {fmt!r}")
    return (
        Path(root)
        / f"nsddata_betas/ppdata/{_subj(subject)}/{space}/{beta_version}/betas_session{int(session):02d}.{fmt}"
    )


def ncsnr_path(root: PathLike, subject: int, space: str = "func1pt8mm", beta_version: str = BETA_VERSION) -> Path:
    """Noise-ceiling SNR volume beside the betas (docs/data-formats.md 1.8)."""
    return Path(root) / f"nsddata_betas/ppdata/{_subj(subject)}/{space}/{beta_version}/ncsnr.nii.gz"


def roi_path(root: PathLike, subject: int, atlas: str, hemi: str | None = None, space: str = "func1pt8mm") -> Path:
    """Volume ROI file ``{,lh.,rh.}<atlas>.nii.gz`` (docs/data-formats.md 1.9)."""
    prefix = f"{hemi}." if hemi else ""
    return Path(root) / f"nsddata/ppdata/{_subj(subject)}/{space}/roi/{prefix}{atlas}.nii.gz"


def ctab_path(root: PathLike, subject: int | None, atlas: str) -> Path:
    """Label table ``<atlas>.mgz.ctab``; ``subject=None`` gives the fsaverage one (docs/data-formats.md 1.2, 1.9)."""
    who = "fsaverage" if subject is None else _subj(subject)
    return Path(root) / f"nsddata/freesurfer/{who}/label/{atlas}.mgz.ctab"


def mni_transform_path(root: PathLike, subject: int, space: str = "func1pt8mm") -> Path:
    """``transforms/MNI-to-<func1pt8|func1pt0>.nii.gz``: MNI voxel coordinates per voxel (docs/data-formats.md 1.11)."""
    if space not in MNI_TRANSFORM_SPACE:
        raise ValueError(f"NSD ships MNI transforms for the spaces {sorted(MNI_TRANSFORM_SPACE)}, not {space!r}")
    return Path(root) / f"nsddata/ppdata/{_subj(subject)}/transforms/MNI-to-{MNI_TRANSFORM_SPACE[space]}.nii.gz"


def check_distance_space(distance_space: str, space: str, key: str = "distance_space") -> str:
    """``distance_space`` if it is one of :data:`DISTANCE_SPACES` and possible in ``space``, else a ValueError that
    names ``key`` (the config key) and what to do."""
    if distance_space not in DISTANCE_SPACES:
        raise ValueError(f"{key}: unknown value {distance_space!r}; use one of {', '.join(DISTANCE_SPACES)}")
    if distance_space == "mni" and space not in MNI_TRANSFORM_SPACE:
        raise ValueError(
            f"{key}: mni is not available with space {space!r}: NSD's MNI transforms map its volume spaces "
            f"({', '.join(MNI_TRANSFORM_SPACE)}), and fsaverage vertices reach MNI only through each subject's own "
            "surface, which the workflow does not read. Set it to native (for fsaverage that measures on the "
            "fsaverage white surface, a template space itself) or use space: func1pt8mm (docs/data-formats.md 1.11)"
        )
    return distance_space


def fsaverage_betas_path(
    root: PathLike, subject: int, session: int, hemi: str, beta_version: str = BETA_VERSION
) -> Path:
    """fsaverage betas ``{lh,rh}.betas_sessionNN.mgh`` (docs/data-formats.md 1.2, 1.7)."""
    return (
        Path(root)
        / f"nsddata_betas/ppdata/{_subj(subject)}/fsaverage/{beta_version}/{hemi}.betas_session{int(session):02d}.mgh"
    )


def fsaverage_ncsnr_path(root: PathLike, subject: int, hemi: str, beta_version: str = BETA_VERSION) -> Path:
    """fsaverage noise-ceiling SNR ``{lh,rh}.ncsnr.mgh`` (docs/data-formats.md 1.8)."""
    return Path(root) / f"nsddata_betas/ppdata/{_subj(subject)}/fsaverage/{beta_version}/{hemi}.ncsnr.mgh"


def fsaverage_label_path(root: PathLike, atlas: str, hemi: str) -> Path:
    """Group atlas on fsaverage ``{lh,rh}.<atlas>.mgz`` (docs/data-formats.md 1.2)."""
    return Path(root) / f"nsddata/freesurfer/fsaverage/label/{hemi}.{atlas}.mgz"


def fsaverage_surface_path(root: PathLike, hemi: str, surface: str = "white") -> Path:
    """fsaverage surface geometry, e.g. ``surf/lh.white`` (docs/data-formats.md 1.7)."""
    return Path(root) / f"nsddata/freesurfer/fsaverage/surf/{hemi}.{surface}"


def required_files(
    subject: int,
    n_sessions: int,
    atlases: Iterable[str],
    *,
    fmt: str = "nii.gz",
    space: str = "func1pt8mm",
    beta_version: str = BETA_VERSION,
    distance_space: str = "native",
) -> list[str]:
    """Bucket keys ``subject.load_subject`` reads for one subject, for a download or existence-check rule.

    ``prf-visualrois`` is always included because ``distance_v1`` needs V1; with ``distance_space="mni"``, so is
    the subject's MNI transform (:func:`mni_transform_path`).
    """
    check_distance_space(distance_space, space)
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
        if distance_space == "mni":
            files.append(mni_transform_path(root, subject, space))
    return [p.as_posix() for p in files]
