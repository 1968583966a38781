"""Rapid serial presentation, as in THINGS-EEG2 (docs/data-formats.md 6.4): a new image every ``soa`` seconds, so
each epoch holds the tails of the images before it and the onsets of the images after it.

``rsvp_release`` turns per-image responses (on a lag axis from stimulus onset) into the released files' arrays: a
continuous recording per split in which every presentation adds its image's response at its onset, plus noise, cut
into epochs around each onset, baseline-corrected on the pre-stimulus samples and sorted into (conditions,
repetitions) as the authors' preprocessing does. With ``soa=None`` every presentation is recorded alone (no
overlap), the reference against which the overlap is measured (docs/decisions.md "THINGS-EEG2's rapid serial
presentation").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradbrain.data.things_eeg2.layout import CHANNELS, EPOCHS, SOA
from gradbrain.data.things_eeg2.write import write_image_metadata, write_split
from gradbrain.data.things_meg.layout import EpochTiming
from gradbrain.simulation.brain import meg_evoked
from gradbrain.simulation.stimuli import DriverFeatures

LAGS = np.arange(int(round(1.4 * EPOCHS.sfreq))) / EPOCHS.sfreq
"""Lags (s) of the simulated EEG responses: long enough for the tails that reach the next four epochs."""


def eeg_responses(
    scenario: str, drivers: list[DriverFeatures], cfg: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Per-image responses (n_images, 17, lags) of the MEG brain of ``meg_evoked`` (``cfg``: simulation.meg's
    latencies, widths and sources) on THINGS-EEG2's channels, at ``LAGS`` after each image's onset."""
    return meg_evoked(scenario, drivers, cfg, LAGS, len(CHANNELS), rng)


def rsvp_split(
    responses: np.ndarray,
    reps: int,
    rng: np.random.Generator,
    *,
    noise: float = 0.0,
    soa: float | None = SOA,
    timing: EpochTiming = EPOCHS,
) -> np.ndarray:
    """(conditions, reps, channels, times) epochs of a split whose images are shown ``reps`` times in random order.

    ``responses`` is (conditions, channels, lags): image ``i``'s response at lag ``k / timing.sfreq`` after its onset
    (zero before onset). Epochs run from ``timing.tmin`` for ``timing.n_times`` samples; noise is white, of SD
    ``noise``, added to the continuous recording.
    """
    n_cond, n_ch, n_lags = responses.shape
    pre = int(round(-timing.tmin * timing.sfreq))
    order = rng.permutation(np.repeat(np.arange(n_cond), reps))
    isolated = pre + max(timing.n_times, n_lags) + 1  # the next baseline starts after the previous response ends
    step = isolated if soa is None else int(round(soa * timing.sfreq))
    onsets = pre + step * np.arange(len(order))
    stream = np.zeros((n_ch, onsets[-1] + max(n_lags, timing.n_times) + 1), np.float64)
    for onset, image in zip(onsets, order, strict=True):
        stream[:, onset : onset + n_lags] += responses[image]
    if noise:
        stream += noise * rng.standard_normal(stream.shape)
    out = np.zeros((n_cond, reps, n_ch, timing.n_times), np.float64)
    seen = np.zeros(n_cond, int)
    for onset, image in zip(onsets, order, strict=True):
        epoch = stream[:, onset - pre : onset - pre + timing.n_times]
        out[image, seen[image]] = epoch - epoch[:, :pre].mean(axis=1, keepdims=True)
        seen[image] += 1
    return out


def write_rsvp_subject(
    root: str | Path,
    subject: int,
    responses: dict[str, np.ndarray],
    reps: dict[str, int],
    rng: np.random.Generator,
    *,
    noise: float,
    soa: float | None = SOA,
) -> list[Path]:
    """Write one participant's training and test files in the released format from per-image ``responses`` per
    split (conditions, channels, lags), each split recorded as its own rapid serial presentation."""
    return [
        write_split(root, subject, split, rsvp_split(responses[split], reps[split], rng, noise=noise, soa=soa))
        for split in ("train", "test")
    ]


def write_rsvp_images(images_root: str | Path, concepts: dict[str, Sequence[str]]) -> dict[str, list[str]]:
    """``image_metadata.npy`` for images named after their concepts (``NNNNN_<concept>`` folders, as released);
    returns the file names per split."""
    files = {
        split: [f"{c.split('_', 1)[1]}_{k:02d}{'b' if split == 'train' else 's'}.jpg" for k, c in enumerate(names)]
        for split, names in concepts.items()
    }
    write_image_metadata(images_root, files, concepts)
    return files


def _cv_r2(X: np.ndarray, Y: np.ndarray, alpha: float, folds: int) -> np.ndarray:
    """Cross-validated R^2 of a ridge map X -> Y (n, targets), per target, with ``folds`` contiguous folds."""
    n = len(X)
    pred = np.zeros_like(Y)
    for test in np.array_split(np.arange(n), folds):
        train = np.setdiff1d(np.arange(n), test)
        mx, my = X[train].mean(0), Y[train].mean(0)
        Xt = X[train] - mx
        W = np.linalg.solve(Xt.T @ Xt + alpha * np.eye(X.shape[1]), Xt.T @ (Y[train] - my))
        pred[test] = (X[test] - mx) @ W + my
    return 1 - ((Y - pred) ** 2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)


def overlap_measurement(
    seed: int = 0,
    *,
    n_images: int = 400,
    reps: int = 4,
    n_ch: int = 17,
    n_features: int = 16,
    latencies: tuple[float, float] = (0.12, 0.45),
    width: float = 0.04,
    noise: float = 1.0,
    planted_late: bool = True,
) -> dict[str, np.ndarray]:
    """Encoding R^2 time courses of an early (activation-like) and a late (error-like) feature set, on the same
    brain recorded with and without the rapid serial presentation's overlap.

    Each feature set drives its own topography with a Gaussian envelope at its latency (the late one only when
    ``planted_late``); returns ``times`` and, for ``overlap`` and ``isolated``, (2, n_times) mean-over-channel
    cross-validated R^2 of the early and late features.
    """
    rng = np.random.default_rng(seed)
    lags = LAGS
    feats = [rng.standard_normal((n_images, n_features)) for _ in latencies]
    responses = np.zeros((n_images, n_ch, len(lags)))
    for k, (X, lat) in enumerate(zip(feats, latencies, strict=True)):
        if k == 1 and not planted_late:
            continue
        drive = X @ rng.standard_normal((n_features, 1)) / np.sqrt(n_features)
        topo = rng.standard_normal((1, n_ch))
        responses += (drive @ topo)[:, :, None] * np.exp(-0.5 * ((lags - lat) / width) ** 2)
    out: dict[str, np.ndarray] = {"times": EPOCHS.times}
    for name, soa in (("overlap", SOA), ("isolated", None)):
        epochs = rsvp_split(responses, reps, np.random.default_rng([seed, 1]), noise=noise, soa=soa)
        Y = epochs.mean(axis=1)
        out[name] = np.array(
            [
                [_cv_r2(X, Y[:, :, t], alpha=float(n_features), folds=5).mean() for t in range(EPOCHS.n_times)]
                for X in feats
            ]
        )
    return out
