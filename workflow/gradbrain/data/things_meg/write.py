"""Write THINGS-MEG files in their real formats: epochs with their metadata, and THINGS images (docs/data-formats.md 5).

For the planted-truth simulation and the tests, which then read them with the same code as the real data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import mne
import numpy as np
import pandas as pd

from gradbrain.data.things_meg.layout import CATCH_VALUE, EPOCHS, METADATA_COLUMNS, epochs_path, stimulus_id


def _broadcast(value, n: int, name: str) -> np.ndarray:
    """A scalar repeated n times, or a sequence checked to have n values."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        return np.full(n, arr.item())
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} values, expected {n}")
    return arr


def metadata_frame(
    trial_type: Sequence[str],
    image_path: Sequence[str],
    session_nr: int | Sequence[int],
    run_nr: int | Sequence[int],
    things_image_nr: Sequence[float] | None = None,
    things_category_nr: Sequence[float] | None = None,
    onset: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Epochs metadata in the layout of ``sample_attributes_P{n}.csv`` (18 columns, real order) with plausible values.

    Without ``things_image_nr`` / ``things_category_nr`` the numbers are the 1-based ranks of the sorted image ids /
    concepts. Catch rows get NaN numbers; test rows get ``test_image_nr`` 1..n over the sorted test images.
    """
    trial_type = np.asarray(trial_type, dtype=object)
    n = len(trial_type)
    paths = _broadcast(image_path, n, "image_path").astype(object)
    ids = [stimulus_id(p) for p in paths]
    real = np.array([i is not None for i in ids])
    if np.any(real != (trial_type != "catch")):
        raise ValueError("catch trials (and only they) must have images_catch_meg paths")
    concepts = [i.split("/")[0] if i else None for i in ids]
    if things_image_nr is None:
        rank = {s: k + 1 for k, s in enumerate(sorted({i for i in ids if i}))}
        img_nr = np.array([rank[i] if i else np.nan for i in ids], dtype=float)
    else:
        img_nr = _broadcast(things_image_nr, n, "things_image_nr").astype(float)
    if things_category_nr is None:
        rank = {c: k + 1 for k, c in enumerate(sorted({c for c in concepts if c}))}
        cat_nr = np.array([rank[c] if c else np.nan for c in concepts], dtype=float)
    else:
        cat_nr = _broadcast(things_category_nr, n, "things_category_nr").astype(float)
    img_nr[~real] = np.nan
    cat_nr[~real] = np.nan
    exemplar: dict[str, int] = {}
    per_concept: dict[str, int] = {}
    for tt in ("exp", "test"):
        for i, c, t in zip(ids, concepts, trial_type, strict=True):
            if t == tt and i not in exemplar:
                per_concept[c] = per_concept.get(c, 0) + 1
                exemplar[i] = per_concept[c]
    ex_nr = np.array([exemplar[i] if i else np.nan for i in ids], dtype=float)
    test_rank = {
        s: k + 1 for k, s in enumerate(sorted({i for i, t in zip(ids, trial_type, strict=True) if t == "test"}))
    }
    test_nr = np.array(
        [test_rank[i] if t == "test" else np.nan for i, t in zip(ids, trial_type, strict=True)], dtype=float
    )
    session = _broadcast(session_nr, n, "session_nr").astype(int)
    run = _broadcast(run_nr, n, "run_nr").astype(int)
    if onset is None:
        onset_s = np.zeros(n)
        for key in dict.fromkeys(zip(session, run, strict=True)):
            sel = (session == key[0]) & (run == key[1])
            onset_s[sel] = 2.0 + 1.5 * np.arange(sel.sum())
    else:
        onset_s = _broadcast(onset, n, "onset").astype(float)
    catch = ~real
    rt = np.where(catch, 0.45, np.nan)
    return pd.DataFrame(
        {
            "trial_type": trial_type.astype(str),
            "image_nr": img_nr,
            "category_nr": cat_nr,
            "exemplar_nr": ex_nr,
            "test_image_nr": test_nr,
            "things_category_nr": cat_nr,
            "things_image_nr": img_nr,
            "things_exemplar_nr": ex_nr,
            "image_path": paths.astype(str),
            "onset": onset_s,
            "image_on": onset_s,
            "image_off": onset_s + 0.5,
            "responded": catch.astype(int),
            "key_id": np.where(catch, 1.0, np.nan),
            "key_time": onset_s + rt,
            "RT": rt,
            "session_nr": session,
            "run_nr": run,
        },
        columns=METADATA_COLUMNS,
    )


def write_epochs(
    root: str | Path,
    subject: int | str,
    data: np.ndarray,
    metadata: pd.DataFrame,
    ch_names: Sequence[str],
    *,
    sfreq: float = EPOCHS.sfreq,
    tmin: float = EPOCHS.tmin,
    split_size: str | int = "2GB",
    values: Sequence[int] | None = None,
) -> Path:
    """Save epochs as the real ``derivatives/preprocessed/preprocessed_P{n}-epo.fif`` (split by mne above split_size).

    Event values are the THINGS image numbers (``values``, default ``metadata.things_image_nr``), 999999 for catch.
    """
    data = np.asarray(data)
    if data.ndim != 3 or data.shape[0] != len(metadata) or data.shape[1] != len(ch_names):
        raise ValueError(f"data shape {data.shape} does not match {len(metadata)} trials x {len(ch_names)} channels")
    if values is None:
        nr = metadata["things_image_nr"].to_numpy(dtype=float)
        catch = metadata["trial_type"].to_numpy() == "catch"
        if np.isnan(nr[~catch]).any():
            raise ValueError("exp/test rows need things_image_nr (or pass values=)")
        values = np.where(catch, CATCH_VALUE, np.nan_to_num(nr)).astype(int)
    values = np.asarray(values, dtype=int)
    n = len(values)
    events = np.c_[np.arange(n) * int(round(1.5 * sfreq)) + int(round(2.0 * sfreq)), np.zeros(n, int), values]
    info = mne.create_info(list(ch_names), sfreq, "mag")
    epochs = mne.EpochsArray(
        data,
        info,
        events=events,
        tmin=tmin,
        event_id={str(v): int(v) for v in np.unique(values)},
        metadata=metadata.reset_index(drop=True),
        verbose=False,
    )
    path = epochs_path(root, subject)
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs.save(path, split_size=split_size, fmt="single", overwrite=True, verbose=False)
    return path


def write_image(images_root: str | Path, stimulus_id: str, image_uint8: np.ndarray) -> Path:
    """Save an RGB uint8 image as JPEG (quality 95) at ``<images_root>/object_images/<stimulus_id>``."""
    from PIL import Image

    path = Path(images_root) / "object_images" / stimulus_id
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image_uint8, dtype=np.uint8)).convert("RGB").save(path, format="JPEG", quality=95)
    return path
