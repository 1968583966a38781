"""Read NSD's files: the design and trial table, the image brick, one session of betas, the noise ceiling.

Every reader names the file it failed on and says what to do: a missing file (:func:`require`) names the download,
a file that exists but cannot be parsed raises :class:`NSDFileError` ("download it again"). Formats:
docs/data-formats.md 1.3-1.8.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io
from nibabel.filebasedimages import ImageFileError

from gradbrain.data.nsd.paths import (
    COMPLETED_SESSIONS,
    HEMIS,
    TRIALS_PER_SESSION,
    PathLike,
    _subj,
    expdesign_path,
    stimuli_path,
)

READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, ImageFileError)
"""What nibabel, gzip and scipy raise on a truncated or corrupt file."""
_NIFTI_BLOCK_BYTES = 64 << 20  # trials of one NIfTI session read at a time (about 45 of subj01's 750)


class NSDFileError(OSError):
    """An NSD file exists but cannot be read: truncated, corrupt or not in the expected format."""


def require(path: Path, what: str, hint: str) -> Path:
    """``path`` if it exists, else FileNotFoundError naming ``what``, the path and ``hint`` (what to download)."""
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}. {hint}")
    return path


def read_nifti(path: Path, what: str, hint: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """(data, affine, header) of a NIfTI, with errors naming the file for missing or truncated files."""
    require(path, what, hint)
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj)
    except READ_ERRORS as exc:
        raise NSDFileError(
            f"cannot read {what} {path}: {type(exc).__name__}: {exc}. "
            "The file is truncated or corrupt; download it again"
        ) from exc
    return data, img.affine, img.header


def read_mgh(path: Path, what: str, hint: str) -> np.ndarray:
    """MGH data reshaped to (V, ...) without singleton axes 1-2 (shape (V, 1, 1[, T]))."""
    require(path, what, hint)
    try:
        data = np.asarray(nib.load(path).dataobj)
    except READ_ERRORS as exc:
        raise NSDFileError(
            f"cannot read {what} {path}: {exc}. The file is truncated or corrupt; download it again"
        ) from exc
    return data.reshape(data.shape[0], *data.shape[3:])


# ---------------------------------------------------------------------------------------------------------------
# Design, trials and images (docs/data-formats.md 1.3, 1.5)


def read_expdesign(root: PathLike) -> dict[str, np.ndarray]:
    """``masterordering`` (N,), ``subjectim`` (8, M), ``sharedix`` (K,) as int arrays, still 1-based.

    docs/data-formats.md 1.3.
    """
    path = require(expdesign_path(root), "NSD design file", "Download nsddata/experiments/nsd/nsd_expdesign.mat.")
    try:
        d = scipy.io.loadmat(path)
    except READ_ERRORS as exc:
        raise NSDFileError(f"cannot read {path} ({exc}); download it again") from exc
    return {
        "masterordering": d["masterordering"].ravel().astype(int),
        "subjectim": np.atleast_2d(d["subjectim"]).astype(int),
        "sharedix": d["sharedix"].ravel().astype(int),
    }


def n_trials(n_sessions: int, trials_per_session: int, n_design: int, subject: int) -> int:
    """Trials of a subject's first ``n_sessions`` sessions: ``n_sessions * trials_per_session``, or fewer when the
    design (``n_design`` trials of ``masterordering``) ends inside the last session.

    Real NSD sessions are always full (the design plans 40 x 750 trials); a simulated study whose showings do not
    fill whole sessions ends with a shorter one (docs/data-formats.md 1.10).
    """
    if n_sessions < 1:
        raise ValueError(f"n_sessions must be >= 1, got {n_sessions}")
    if (n_sessions - 1) * trials_per_session >= n_design:
        raise ValueError(
            f"subject {subject}: {n_sessions} sessions x {trials_per_session} trials asked for, but masterordering in "
            f"nsd_expdesign.mat has only {n_design} trials ({-(-n_design // trials_per_session)} sessions); lower "
            "n_sessions in the config"
        )
    return min(n_sessions * trials_per_session, n_design)


def design_trials(
    design: Mapping[str, np.ndarray], subject: int, n_sessions: int, trials_per_session: int
) -> pd.DataFrame:
    """:func:`trial_table` from an already read design (``read_expdesign``), so several subjects share one read."""
    _subj(subject)
    mo = design["masterordering"]
    n = n_trials(int(n_sessions), int(trials_per_session), len(mo), subject)
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
    ``subjectim[s-1, masterordering[t]-1] - 1`` (docs/data-formats.md 1.3).
    """
    return design_trials(read_expdesign(root), subject, n_sessions, trials_per_session)


def stimulus_ids(
    root: PathLike, subjects: Mapping[int, int], *, trials_per_session: int = TRIALS_PER_SESSION
) -> np.ndarray:
    """Sorted unique 0-based nsd ids shown to the given subjects (subject -> n_sessions)."""
    design = read_expdesign(root)
    ids = [design_trials(design, s, n, trials_per_session)["nsd_id"].to_numpy() for s, n in subjects.items()]
    return np.unique(np.concatenate(ids)) if ids else np.array([], dtype=int)


def read_images(root: PathLike, nsd_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """uint8 images (n, H, W, 3) from ``imgBrick`` in the order of ``nsd_ids`` (0-based, repeats allowed).

    h5py fancy indexing needs strictly increasing indices, so rows are read sorted and unique, then mapped back
    (docs/data-formats.md 1.5).
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
            path = require(
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
            contiguous = uniq[-1] - uniq[0] + 1 == uniq.size  # one hyperslab read, much faster
            rows = brick[int(uniq[0]) : int(uniq[-1]) + 1] if contiguous else brick[uniq]
        except (OSError, KeyError) as exc:
            raise NSDFileError(f"cannot read imgBrick from {path} ({exc}); download it again") from exc
        return rows[inverse]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None


# ---------------------------------------------------------------------------------------------------------------
# Betas (docs/data-formats.md 1.6, 1.7)


def missing_session_hint(subject: int, session: int) -> str:
    """What to do when a session's betas are missing: lower n_sessions, or finish the download."""
    return (
        f"Session {session} of subject {subject} is missing: n_sessions for subject {subject} in the config may be "
        f"larger than the sessions available (NSD completed {COMPLETED_SESSIONS[subject]}) or the download is "
        "incomplete."
    )


def _check_trials(path: Path, n_trials: int, expected: int) -> None:
    if n_trials != expected:
        raise ValueError(
            f"{path} has {n_trials} trials, expected {expected} (750 in real NSD sessions): the file is not a complete "
            "NSD session, or the dataset's trials_per_session in the config does not match this tree"
        )


def read_session_nifti(
    path: Path, subject: int, session: int, ijk: tuple[np.ndarray, ...], grid: tuple, n_trials: int
) -> np.ndarray:
    """(T, n_voxels) int16 betas of the selected voxels from a NIfTI (X, Y, Z, T), read a block of trials at a time.

    The trial axis is the slowest in the file (Fortran order), so each block is one contiguous byte range of the
    gzip stream; with the file kept open the blocks decompress the stream once, front to back. Reading the whole
    session at once would hold it twice (nibabel reads a gzip stream into bytes, then copies it: 2.1 GB for subj01).
    """
    require(path, f"betas of session {session}", missing_session_hint(subject, session))
    try:
        img = nib.load(path, keep_file_open=True)
    except READ_ERRORS as exc:
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
    except READ_ERRORS as exc:
        raise NSDFileError(
            f"cannot read betas {path}: {type(exc).__name__}: {exc}. "
            "The file is truncated or corrupt; download it again"
        ) from exc
    return out


def read_session_hdf5(
    path: Path, subject: int, session: int, ijk: tuple[np.ndarray, ...], grid: tuple, n_trials: int
) -> np.ndarray:
    """(T, n_voxels) int16 betas from dataset ``betas`` (T, Z, Y, X), read one z-plane box at a time."""
    require(path, f"betas of session {session}", missing_session_hint(subject, session))
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


def read_session_mgh(
    paths: Mapping[str, Path], subject: int, session: int, vertices: Mapping[str, np.ndarray], n_trials: int
) -> np.ndarray:
    """(T, n_vertices) float32 PSC from ``{lh,rh}.betas_sessionNN.mgh`` (already PSC, not x300)."""
    parts = []
    for hemi in HEMIS:
        data = read_mgh(paths[hemi], f"{hemi} betas of session {session}", missing_session_hint(subject, session))
        if data.ndim != 2:
            raise ValueError(f"{paths[hemi]} has shape {data.shape}; expected (V, 1, 1, trials)")
        _check_trials(paths[hemi], data.shape[1], n_trials)
        parts.append(data[vertices[hemi]].astype(np.float32).T)
    return np.concatenate(parts, axis=1)


def trial_count(path: Path, fmt: str) -> int:
    """Length of the trial axis from the header only."""
    try:
        if fmt == "nii.gz":
            shape = nib.load(path).shape
            return int(shape[3]) if len(shape) == 4 else 0
        with h5py.File(path, "r") as f:
            return int(f["betas"].shape[0])
    except (*READ_ERRORS, KeyError) as exc:
        raise NSDFileError(
            f"cannot read betas {path}: {exc}. The file is truncated or corrupt; download it again"
        ) from exc


def noise_ceiling(ncsnr: np.ndarray, n_repeats: np.ndarray | int) -> np.ndarray:
    """Noise ceiling in percent, ``100 * ncsnr**2 / (ncsnr**2 + 1/n)`` (docs/data-formats.md 1.8).

    ``n_repeats`` is the number of trials averaged per image: a scalar, or one count per image of the evaluated
    set, in which case 1/n is replaced by the mean of 1/n_i, which equals the Algonauts ``(A/3 + B/2 + C/1)/(A+B+C)``.
    """
    n = np.atleast_1d(np.asarray(n_repeats, dtype=np.float64))
    if n.size == 0 or (n < 1).any():
        raise ValueError("n_repeats must hold counts >= 1")
    snr2 = np.asarray(ncsnr, dtype=np.float64) ** 2
    return 100.0 * snr2 / (snr2 + np.mean(1.0 / n))
