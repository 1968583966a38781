"""Joint encoding of each layer of a kind with the control space, and the test of its signal beyond it (arrays only).

For every layer k of a kind (gradients, or a learning rule's errors): the banded ridge of the control space C and
the layer's features G_k on the outer folds of the single-space fits (``encoding.banded``), the control alone on the
same folds, and the partial F-test of G_k's principal directions outside C (``encoding.partition``). Used by the
encoding stage for one subject and by the power analysis for many simulated subjects side by side (``groups``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradbrain import stats
from gradbrain.encoding.banded import CrossValidatedBandedRidge, two_band_gammas
from gradbrain.encoding.cv import CrossValidatedRidge
from gradbrain.encoding.identifiability import Layer, noise_for_r, read_layer
from gradbrain.encoding.partition import (
    MIN_RESIDUAL_DF,
    ControlProjection,
    PartialF,
    combine_layers,
    excess_partial_r2,
    gradient_basis,
    partial_f_from_sums,
    residual_df,
    summed_f,
)

log = logging.getLogger(__name__)
CRITERION = "gcv"
"""How the joint and control fits choose each target's (gamma, alpha): generalised cross-validation, whose cost per
alpha is O(p t) instead of exact leave-one-out's O(n p t) (``encoding.ridge``); the same for both, so that a target
whose joint fit takes the control band alone has no unique variance."""


@dataclass
class JointFit:
    """Per layer and target: joint R^2 and r, the partial F-test's p and excess partial R^2
    (``partition.excess_partial_r2``); per layer and group: the summed test, and the mean excess partial R^2 of
    the kind (L, groups) and of each placebo gradient (J, L, groups) that ``partition.placebo_test`` compares."""

    r2_joint: np.ndarray  # (L, t)
    r_joint: np.ndarray  # (L, t)
    f_p: np.ndarray  # (L, t)
    excess_r2: np.ndarray  # (L, t)
    layer_stat: np.ndarray  # (L, groups)
    layer_p: np.ndarray  # (L, groups)
    df_num: np.ndarray  # (L,): m_k, the directions of layer k outside C
    df_den: np.ndarray  # (L,)
    identifiability: dict[str, float] | None = None
    layer_excess: np.ndarray | None = None  # (L, groups)
    placebo_excess: np.ndarray | None = None  # (J, L, groups)


def band_weights(cfg: dict[str, Any]) -> np.ndarray:
    """The candidate band weights of ``encoding.partition.band_ratios`` (gradient band / control band), with the
    control band alone as the last candidate (``encoding.banded.two_band_gammas``)."""
    return two_band_gammas(tuple(float(r) for r in cfg["band_ratios"]), band_off=True)


def check_partition_fits(n: int, dims: list[int], part: dict[str, Any], where: str) -> None:
    """Refuse, before any fit, a partition whose partial F-test would have too few residual degrees of freedom.

    ``part`` is encoding.partition. The bound is :func:`partition.residual_df` at the largest ranks its sizes allow:
    rank(C) <= min(n - 1, sum_l min(q, d_l)) for ``control_components`` q and layer widths d_l (a gradient layer is
    as wide as its activations), and m <= min(``gradient_components``, min_l d_l).
    """
    control = min(n - 1, sum(min(int(part["control_components"]), d) for d in dims))
    df_den = residual_df(n, control, min(int(part["gradient_components"]), *dims))
    if df_den < MIN_RESIDUAL_DF:
        raise ValueError(
            f"{where}: {n} training images are too few for encoding.partition ({len(dims)} layers x "
            f"control_components {part['control_components']} + gradient_components {part['gradient_components']} "
            f"leave {df_den} residual degrees of freedom, at least {MIN_RESIDUAL_DF} needed); lower those keys "
            "(e.g. --config encoding.partition.control_components=4), set encoding.partition.enabled=false, or use "
            "more images"
        )


def control_scores(control: np.ndarray, Y: np.ndarray, folds: np.ndarray, alphas: np.ndarray,
                   solver: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(R^2, r) per target of the control space alone, on the folds of the single-space fits."""
    scores = CrossValidatedRidge(control, folds, alphas, **solver, criterion=CRITERION, gram=True).score(Y)
    return scores.r2, scores.r


def joint_fit(
    control: np.ndarray, layers: Sequence[Layer], Y: np.ndarray, folds: np.ndarray, alphas: np.ndarray,
    gammas: np.ndarray, components: int, solver: dict[str, Any], groups: np.ndarray | None = None,
    label: str = "", depths: np.ndarray | None = None, control_scores_r2: np.ndarray | None = None,
    alpha: float = 0.05, seed: int = 0, placebos: Sequence[Sequence[Layer]] | None = None,
) -> JointFit:  # fmt: skip
    """The joint fits and the test of every layer of one kind (``layers``: (n, d_l) training rows each, or readers
    of them: one layer in memory at a time, each read three times: its basis, its joint fit, the identifiability).

    ``components``: the gradients' principal directions outside C that the F-test of a layer uses, at most the
    layer's rank there (and its placebos', so that a layer and its placebos are tested on as many directions): each
    layer has its own m_k, as a layer of lower rank (a ResNet's last block, whose gradient W'(p - y) spans the
    classes) must not narrow the test of the others. ``groups`` (t,) assigns the targets to subjects for the summed
    test (one group when None). With
    ``depths`` (and the control fit's R^2), the unique maps' layer identifiability at the observed unique signal
    is computed too (:func:`unique_identifiability`). ``placebos``: J placebo gradients' layers (features/placebo.py),
    tested by the same F-tests (one pass over the targets) for their excess partial R^2; a layer may be given as a
    callable that reads it, so that only one placebo layer is in memory at a time.
    """
    n, t = Y.shape
    groups = np.zeros(t, dtype=int) if groups is None else np.asarray(groups)
    proj = ControlProjection.of(control)
    bases = [gradient_basis(read_layer(X), proj, components) for X in layers]
    placebo_bases = [gradient_basis(read_layer(X), proj, components) for p in placebos or [] for X in p]
    L = len(bases)
    m = [min(q.shape[1] for q in bases[k::L] + placebo_bases[k::L]) for k in range(L)]
    bases = [q[:, : m[k]] for k, q in enumerate(bases)]
    placebo_bases = [q[:, : m[i % L]] for i, q in enumerate(placebo_bases)]
    all_tests, all_stat, all_p = f_tests(proj, bases + placebo_bases, Y, groups)
    tests, layer_stat, layer_p = all_tests[:L], all_stat[:L], all_p[:L]
    excess = group_excess(all_tests, groups)
    placebo_max = np.round(excess[L:].max(0).mean(), 5) if placebos else "-"
    log.info("%s: mean excess partial R^2 per layer %s; placebos' largest %s", label,
             np.round(excess[:L].mean(1), 5).tolist(), placebo_max)  # fmt: skip
    r2, r = [], []
    for k, X in enumerate(layers):
        scores = CrossValidatedBandedRidge(
            [control, read_layer(X)], folds, gammas, alphas, **solver, criterion=CRITERION, gram=True
        ).score(Y)
        r2.append(scores.r2)
        r.append(scores.r)
        log.info("%s layer %d: median joint R^2 %.4f, targets with F-test p < 0.05: %.3f, subject p %s", label, k,
                 np.median(scores.r2), np.mean(tests[k].p < 0.05), np.round(layer_p[k][:4], 4).tolist())  # fmt: skip
    fit = JointFit(np.stack(r2), np.stack(r), np.stack([s.p for s in tests]),
                   np.stack([excess_partial_r2(s) for s in tests]), layer_stat, layer_p,
                   np.array([s.df_num for s in tests]), np.array([s.df_den for s in tests]), layer_excess=excess[:L],
                   placebo_excess=excess[L:].reshape(len(placebos), L, -1) if placebos else None)  # fmt: skip
    if depths is not None:
        target_r = observed_unique_r(fit, control_scores_r2, alpha) if control_scores_r2 is not None else 0.1
        fit.identifiability = unique_identifiability(proj, layers, bases, depths, target_r, seed=seed)
    return fit


def group_excess(tests: list[PartialF], groups: np.ndarray) -> np.ndarray:
    """Per test and group, the mean over the group's targets of the excess partial R^2 (tests, groups)."""
    n_groups = int(groups.max()) + 1
    values = np.stack([excess_partial_r2(test) for test in tests])
    return np.stack([np.nanmean(values[:, groups == g], axis=1) for g in range(n_groups)], axis=1)


def f_tests(
    proj: ControlProjection, bases: list[np.ndarray], Y: np.ndarray, groups: np.ndarray, batch: int = 2048
) -> tuple[list[PartialF], np.ndarray, np.ndarray]:
    """The partial F-test of every layer's directions for every target, and per group the summed test.

    Targets are taken ``batch`` at a time: each batch's residuals outside the control space (n, batch) are used for
    every layer, then dropped; the residual correlations of the summed test come from pairs of target blocks
    (:func:`residual_correlation_sq`). Memory: a few (n, batch) float64 blocks, whatever the number of targets.
    """
    n = Y.shape[0]
    n_groups = int(groups.max()) + 1
    tests = partial_f_tests(proj, bases, Y, batch)
    stat = np.zeros((len(bases), n_groups))
    pvals = np.zeros((len(bases), n_groups))
    for g in range(n_groups):
        mask = groups == g
        correlation_sq = residual_correlation_sq(proj, Y, np.flatnonzero(mask), batch)
        for k, test in enumerate(tests):
            stat[k, g], pvals[k, g] = summed_f(test.subset(mask), correlation_sq, n)
    return tests, stat, pvals


def partial_f_tests(
    proj: ControlProjection, bases: list[np.ndarray], Y: np.ndarray, batch: int = 2048
) -> list[PartialF]:
    """Per layer, the partial F-test of its directions for every target, ``batch`` targets' residuals at a time."""
    n, t = Y.shape
    delta = np.zeros((len(bases), t))
    total = np.zeros(t)
    for start in range(0, t, batch):
        cols = slice(start, min(start + batch, t))
        res = proj.residual(Y[:, cols])
        total[cols] = (res**2).sum(0)
        for k, q in enumerate(bases):
            delta[k, cols] = ((q.T @ res) ** 2).sum(0)
        del res
    return [partial_f_from_sums(d, total, q.shape[1], n, proj.rank) for d, q in zip(delta, bases, strict=True)]


def residual_correlation_sq(proj: ControlProjection, Y: np.ndarray, columns: np.ndarray, batch: int) -> float:
    """||Z'Z||_F^2 = sum_{a, b} ||Z_a' Z_b||_F^2 of the standardised residuals Z outside the control space of the
    targets ``columns`` of Y, over pairs of target blocks Z_a, Z_b of at most ``batch`` columns (b > a counted
    twice). Never the (n, n) Gram Z Z' (||Z Z'||_F = ||Z'Z||_F): memory is two (n, batch) blocks and a
    (batch, batch) product; block b's residuals are recomputed per a (O(n rank(C) t^2 / batch) extra)."""
    blocks = np.array_split(columns, max(1, -(-len(columns) // batch)))
    total = 0.0
    for i, a in enumerate(blocks):
        za = _standardised_residual(proj, Y[:, a])
        total += float(((za.T @ za) ** 2).sum())
        for b in blocks[i + 1 :]:
            total += 2.0 * float(((za.T @ _standardised_residual(proj, Y[:, b])) ** 2).sum())
    return total


def _standardised_residual(proj: ControlProjection, y: np.ndarray) -> np.ndarray:
    """(r - mean) / SD of each column r of (I - P_C) y (population SD; a constant column is left at scale 1)."""
    res = proj.residual(y)
    sd = res.std(0)
    return (res - res.mean(0)) / np.where(sd > 0, sd, 1.0)


def unique_identifiability(
    proj: ControlProjection, layers: Sequence[Layer], bases: list[np.ndarray], depths: np.ndarray, target_r: float,
    n_per_layer: int = 16, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Can a layer planted in a kind's part outside the control space be told apart from the other layers at the
    observed level of unique signal? (the diagnostic of the claims made on the unique maps)

    ``n_per_layer`` synthetic targets per layer: a random readout of the layer's features outside C, (I - P_C) G_k,
    plus noise of SD sqrt(1/r^2 - 1) (``identifiability.noise_for_r``, r = ``target_r``, the observed unique signal);
    each is assigned the layer of the largest excess partial R^2 (the layer whose directions outside C explain it
    best, the in-sample counterpart of the unique map's argmax; not the largest F, which favours a layer tested on
    fewer directions). One layer's planted targets at a time.
    ``unique_identifiability`` = Pearson(planted depth,
    recovered depth); ``exact_layer_fraction`` the share assigned to the planted layer.
    """
    rng = np.random.default_rng(seed)
    sd = noise_for_r(target_r)
    recovered, planted = [], []
    for k, X in enumerate(layers):
        resid = proj.residual(read_layer(X))
        resid = resid / np.where(resid.std(0) > 0, resid.std(0), 1.0)
        signal = resid @ rng.standard_normal((resid.shape[1], n_per_layer))
        del resid
        signal = (signal - signal.mean(0)) / np.where(signal.std(0) > 0, signal.std(0), 1.0)
        tests = partial_f_tests(proj, bases, signal + sd * rng.standard_normal(signal.shape))
        excess = np.stack([excess_partial_r2(t) for t in tests])
        recovered.append(np.nanargmax(np.nan_to_num(excess, nan=-np.inf), axis=0))
        planted += [k] * n_per_layer
    recovered = np.concatenate(recovered)
    planted = np.asarray(planted)
    depths = np.asarray(depths, dtype=float)
    return {
        "unique_identifiability": stats.pearson(depths[planted], depths[recovered]),
        "exact_layer_fraction": float(np.mean(recovered == planted)),
        "target_r": float(target_r),
    }


def observed_unique_r(fit: JointFit, control_r2: np.ndarray, alpha: float) -> float:
    """The typical unique signal of the targets that have it: sqrt of the median over targets with a significant
    F-test (Bonferroni over layers, BH-FDR over targets) of max_k (R^2(C + G_k) - R^2(C)), or over all targets when
    none is significant."""
    unique = np.nanmax(fit.r2_joint - control_r2[None], axis=0)
    sig = stats.fdr(combine_layers(fit.f_p)) < alpha
    values = unique[sig] if sig.any() else unique
    return float(np.sqrt(max(np.median(values), 1e-4)))
