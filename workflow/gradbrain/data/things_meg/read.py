"""Read THINGS-MEG: the preprocessed epochs into per-image targets, the trials' THINGS images.

The real data are 4 MNE split files per participant (27,048 epochs x 271 channels x 281 samples, float32 on disk);
``load_subject`` streams them in chunks so the whole file is never held in memory. Trials are matched to images
through the metadata's ``image_path`` (``things_image_nr`` disagrees with the events for some trials), see
docs/data-formats.md 2.3-2.5 and 3.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import mne
import numpy as np
import pandas as pd

from gradbrain.data.images import read_rgb
from gradbrain.data.things_meg.layout import OPENNEURO_HINT, THINGS_IMAGES_HINT, epochs_path, stimulus_id

T = TypeVar("T")


@dataclass
class MEGTargets:
    """Per-image MEG responses of one participant: train images (exp trials) and averaged test images."""

    Y: np.ndarray
    stimulus_ids: np.ndarray
    times: np.ndarray
    ch_names: list[str]
    test_Y: np.ndarray | None
    test_ids: np.ndarray
    n_dropped_catch: int


def read_images(images_root: str | Path, ids: Iterable[str], size: int | None = None) -> np.ndarray:
    """Load THINGS images as RGB uint8 (n, H, W, 3); ``size`` resizes each to size x size (bicubic).

    Without ``size`` all images must have the same shape.
    """
    paths = (Path(images_root) / "object_images" / sid for sid in ids)
    return read_rgb(paths, size, "THINGS", THINGS_IMAGES_HINT, "pass size= to resize them")


class MEGFileError(OSError):
    """A THINGS-MEG epochs file exists but cannot be read: truncated or corrupt."""


_INVALID_TAG = re.compile(r"Invalid tag .* in file (.+)$")
"""MNE's warning on a FIF file that ends inside a tag: it names the truncated file."""
_FIF_ERRORS = (ValueError, AssertionError, EOFError)
"""What mne raises on a truncated split file (e.g. 'cannot reshape array of size 8067 into shape (32,281)')."""


def _reading(first: Path, subject: int | str, action: Callable[[], T]) -> T:
    """``action()``, whose failure on a truncated or corrupt FIF file becomes a :class:`MEGFileError` naming the file.

    mne reports the file it found truncated only in a warning, so warnings are recorded while ``action`` runs and
    issued again afterwards.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result, error = action(), None
        except _FIF_ERRORS as exc:
            result, error = None, exc
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if error is not None:
        named = [m.group(1) for w in caught if (m := _INVALID_TAG.search(str(w.message)))]
        culprit = named[0] if named else f"{first} or one of its split files (-epo-1.fif, -epo-2.fif, ...)"
        raise MEGFileError(
            f"cannot read the THINGS-MEG epochs of P{subject} ({first}): {type(error).__name__}: {error}. "
            f"{culprit} is truncated or corrupt; download it again (delete it and run the workflow again with "
            f"download: true, or fetch it yourself). {OPENNEURO_HINT}"
        ) from error
    return result


def _open_epochs(root: str | Path, subject: int | str) -> mne.BaseEpochs:
    """Open a participant's epochs lazily, with errors that name the missing or truncated file and what to do."""
    path = epochs_path(root, subject)
    if not path.is_file():
        raise FileNotFoundError(f"THINGS-MEG epochs not found: {path}. {OPENNEURO_HINT}")
    try:
        epochs = _reading(path, subject, lambda: mne.read_epochs(path, preload=False, verbose=False))
    except FileNotFoundError as err:
        k = 1
        while path.with_name(path.name.replace("-epo.fif", f"-epo-{k}.fif")).is_file():
            k += 1
        missing = path.with_name(path.name.replace("-epo.fif", f"-epo-{k}.fif"))
        raise FileNotFoundError(
            f"split file missing while reading {path}: {missing} (or a later split). MNE split files "
            f"(-epo.fif, -epo-1.fif, -epo-2.fif, ...) must stay together in one folder under their original names. "
            f"{OPENNEURO_HINT}"
        ) from err
    md = epochs.metadata
    missing_cols = [c for c in ("trial_type", "image_path") if md is None or c not in md.columns]
    if missing_cols:
        raise ValueError(
            f"{path}: epochs.metadata lacks columns {missing_cols}. The THINGS-MEG epochs carry "
            f"sourcedata/sample_attributes_P{subject}.csv as metadata; use the original files from OpenNeuro ds004212 "
            "derivatives/preprocessed, or set epochs.metadata from that CSV and save again."
        )
    unknown = sorted(set(md["trial_type"].astype(str)) - {"exp", "test", "catch"})
    if unknown:
        raise ValueError(f"{path}: unexpected trial_type values {unknown}; expected exp, test, catch")
    return epochs


def _trial_ids(metadata: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Trial types and THINGS stimulus ids (None for catch) of every epoch."""
    types = metadata["trial_type"].astype(str).to_numpy()
    ids = np.array(
        [None if t == "catch" else stimulus_id(p) for t, p in zip(types, metadata["image_path"], strict=True)],
        dtype=object,
    )
    return types, ids


def stimulus_ids(root: str | Path, subjects: Iterable[int | str]) -> np.ndarray:
    """Sorted unique THINGS ids of the exp and test trials of the given participants (reads metadata only)."""
    found: set[str] = set()
    for subject in subjects:
        _, ids = _trial_ids(_open_epochs(root, subject).metadata)
        found.update(i for i in ids if i is not None)
    return np.array(sorted(found), dtype=str)


def time_operator(
    times: np.ndarray,
    orig_sfreq: float,
    lowpass: float | None,
    sfreq: float | None,
    tmin: float | None,
    tmax: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The low-pass, resampling and crop of one trial as a linear map on its time axis, and the new times.

    ``mne.filter.filter_data`` (FIR, reflect-limited padding) and ``mne.filter.resample`` (FFT) are linear and the
    same for every channel and trial, so passing unit impulses through them gives a (n_times, n_out) matrix: applying
    it to a chunk equals filtering and resampling each of its rows, without mne's row-by-row loop (271 x 27,048 rows
    of the real data). Returns the matrix, or integer sample indices when there is nothing to filter.
    """
    n_times = len(times)
    new_sfreq = orig_sfreq
    operator = None
    if lowpass is not None:
        operator = mne.filter.filter_data(np.eye(n_times), orig_sfreq, None, lowpass, method="fir", verbose=False)
    if sfreq is not None and sfreq != orig_sfreq:
        operator = np.eye(n_times) if operator is None else operator
        operator = mne.filter.resample(operator, up=sfreq, down=orig_sfreq, axis=-1, verbose=False)
        new_sfreq = float(sfreq)
    n_out = n_times if operator is None else operator.shape[1]
    new_times = float(times[0]) + np.arange(n_out) / new_sfreq
    tol = 1e-3 / new_sfreq
    mask = np.ones(n_out, bool)
    if tmin is not None:
        mask &= new_times >= tmin - tol
    if tmax is not None:
        mask &= new_times <= tmax + tol
    if not mask.any():
        raise ValueError(
            f"no samples between tmin={tmin} and tmax={tmax} (epochs span {new_times[0]:.3f}..{new_times[-1]:.3f} s)"
        )
    if operator is None:
        return np.flatnonzero(mask), new_times[mask]
    return np.ascontiguousarray(operator[:, mask]), new_times[mask]


def load_subject(
    root: str | Path,
    subject: int | str,
    *,
    lowpass: float | None = 20.0,
    sfreq: float | None = 30.0,
    tmin: float | None = None,
    tmax: float | None = None,
    zscore: bool = True,
    split: str = "standard",
    chunk_trials: int = 2000,
    log: Callable[[str], object] | None = None,
) -> MEGTargets:
    """Per-image MEG targets of one participant, streamed from the preprocessed epochs.

    Catch trials are dropped. Each kept trial is low-passed (mne FIR), resampled (mne FFT) and cropped, as one linear
    map on the time axis (``time_operator``), in chunks of ``chunk_trials``; with ``zscore`` every
    channel and time point is z-scored across all kept trials (exp trials used for training plus test trials).
    Exp trials give the training images, test trials the test images; repeats of an image are averaged.
    ``split="zeroshot"`` also drops the exp trials whose concept is a test concept.
    """
    if split not in ("standard", "zeroshot"):
        raise ValueError(f"split must be 'standard' or 'zeroshot', got {split!r}")
    say = log or (lambda msg: None)
    epochs = _open_epochs(root, subject)
    first = epochs_path(root, subject)
    types, ids = _trial_ids(epochs.metadata)
    is_test = types == "test"
    is_exp = types == "exp"
    n_catch = int((types == "catch").sum())
    test_ids = np.array(sorted({i for i in ids[is_test]}), dtype=str)
    if split == "zeroshot":
        test_concepts = {i.split("/")[0] for i in test_ids}
        is_exp &= np.array([i is not None and i.split("/")[0] not in test_concepts for i in ids])
    train_ids = np.array(sorted({i for i in ids[is_exp]}), dtype=str)
    train_row = {s: k for k, s in enumerate(train_ids)}
    test_row = {s: k for k, s in enumerate(test_ids)}
    kept = np.flatnonzero(is_exp | is_test)
    if len(train_ids) == 0:
        raise ValueError(f"{epochs_path(root, subject)}: no exp trials left for training (split={split!r})")

    picks = mne.pick_types(epochs.info, meg=True, ref_meg=False, exclude=[])
    ch_names = [epochs.ch_names[i] for i in picks]
    orig_sfreq = float(epochs.info["sfreq"])
    say(
        f"P{subject}: {len(kept)} trials ({len(train_ids)} train images, {len(test_ids)} test images), "
        f"{n_catch} catch dropped, {len(ch_names)} channels"
    )

    operator, times = time_operator(epochs.times, orig_sfreq, lowpass, sfreq, tmin, tmax)
    shape = (len(ch_names), len(times))
    train_sum = np.zeros((len(train_ids),) + shape, np.float32)
    test_sum = np.zeros((len(test_ids),) + shape, np.float64)
    train_n = np.zeros(len(train_ids))
    test_n = np.zeros(len(test_ids))
    count, mean, m2 = 0, None, None
    for start in range(0, len(kept), chunk_trials):
        rows = kept[start : start + chunk_trials]
        x = _reading(first, subject, lambda rows=rows: epochs[rows].get_data(picks=picks, verbose=False))
        x = x.astype(np.float64, copy=False)
        x = x[..., operator] if operator.ndim == 1 else np.tensordot(x, operator, axes=([2], [0]))
        if zscore:
            n_b, mean_b = len(x), x.mean(axis=0)
            m2_b = ((x - mean_b) ** 2).sum(axis=0)
            if mean is None:
                count, mean, m2 = n_b, mean_b, m2_b
            else:
                delta = mean_b - mean
                total = count + n_b
                mean = mean + delta * (n_b / total)
                m2 = m2 + m2_b + delta**2 * (count * n_b / total)
                count = total
        exp_sel = is_exp[rows]
        if exp_sel.any():
            idx = np.array([train_row[i] for i in ids[rows[exp_sel]]])
            np.add.at(train_sum, idx, x[exp_sel].astype(np.float32))
            np.add.at(train_n, idx, 1)
        test_sel = is_test[rows]
        if test_sel.any():
            idx = np.array([test_row[i] for i in ids[rows[test_sel]]])
            np.add.at(test_sum, idx, x[test_sel])
            np.add.at(test_n, idx, 1)
        say(f"P{subject}: processed {min(start + chunk_trials, len(kept))}/{len(kept)} trials")

    Y = train_sum
    Y /= train_n.astype(np.float32)[:, None, None]
    test_Y = test_sum / test_n[:, None, None] if len(test_ids) else None
    if zscore:
        sd = np.sqrt(m2 / count)
        sd[sd == 0] = 1.0
        Y -= mean.astype(np.float32)
        Y /= sd.astype(np.float32)
        if test_Y is not None:
            test_Y = (test_Y - mean) / sd
    return MEGTargets(
        Y=Y,
        stimulus_ids=train_ids,
        times=times,
        ch_names=ch_names,
        test_Y=None if test_Y is None else test_Y.astype(np.float32),
        test_ids=test_ids,
        n_dropped_catch=n_catch,
    )
