"""The test of gradient-specific signal (partial F-test beyond a control space) and the variance partition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.decomposition import PCA

from gradbrain.encoding.banded import CrossValidatedBandedRidge
from gradbrain.encoding.cv import CrossValidatedRidge, make_folds, standardise
from gradbrain.encoding.joint import check_partition_fits, f_tests, joint_fit
from gradbrain.encoding.partition import (
    ControlProjection,
    combine_layers,
    control_space,
    excess_partial_r2,
    gradient_basis,
    partial_f,
    summed_f,
    variance_parts,
)

ALPHAS = np.logspace(-2, 6, 9)


def _features(rng, n=300, d=20, layers=3):
    """Correlated activation layers, and gradients correlated with them (as per-image gradients are)."""
    base = rng.standard_normal((n, d))
    acts = [base + 0.6 * rng.standard_normal((n, d)) for _ in range(layers)]
    grads = [a @ rng.standard_normal((d, d)) / np.sqrt(d) + 0.8 * rng.standard_normal((n, d)) for a in acts]
    return acts, grads


@pytest.mark.parametrize("listed", [[0, 1, 2], [0, 1, 2, 1]], ids=["distinct", "a layer listed twice"])
def test_partial_f_equals_nested_least_squares(listed):
    """F_t and p_t equal the textbook comparison of two nested OLS fits (numpy lstsq with an intercept), also when
    the control space repeats a layer (its degrees of freedom count the rank of C, not its columns)."""
    rng = np.random.default_rng(0)
    acts, grads = _features(rng)
    control, _ = control_space([acts[k] for k in listed], 5)
    proj = ControlProjection.of(control)
    q = gradient_basis(grads[1], proj, 4)
    Y = control @ rng.standard_normal((control.shape[1], 6)) + rng.standard_normal((300, 6))
    Y[:, 0] += 2 * q[:, 0] * 10  # one target with gradient-specific signal
    test = partial_f(proj.residual(Y), q, proj.rank)
    ones = np.ones((300, 1))
    reduced, full = np.hstack([ones, control]), np.hstack([ones, control, q])
    rss = [((Y - X @ np.linalg.lstsq(X, Y, rcond=None)[0]) ** 2).sum(0) for X in (reduced, full)]
    df = 300 - np.linalg.matrix_rank(full)
    f = ((rss[0] - rss[1]) / 4) / (rss[1] / df)
    assert test.df_den == df and test.df_num == 4
    np.testing.assert_allclose(test.f, f, rtol=1e-8)
    np.testing.assert_allclose(test.p, sps.f.sf(f, 4, df), rtol=1e-6)
    assert test.p[0] < 1e-6 < test.p[1:].min()


def _control_case(case: str, n: int = 200) -> tuple[np.ndarray, int]:
    """A control space of three or four 8-feature layers (all components kept) and its rank."""
    rng = np.random.default_rng(6)
    A, B, L = (rng.standard_normal((n, 8)) for _ in range(3))
    layers, rank = {
        "a layer listed twice": ([A, B, L, B], 24),
        "a layer in the span of two others": (
            [A, B, np.hstack([A[:, :4], B[:, :4]]) @ rng.standard_normal((8, 8))],
            16,
        ),
        "nearly collinear, full rank": ([A, B, A + 1e-3 * L], 24),
        "a layer at 1e-6 of the others' scale": ([A, 1e-6 * B, L], 24),
    }[case]
    return control_space(layers, 8)[0], rank


@pytest.mark.parametrize(
    "case",
    ["a layer listed twice", "a layer in the span of two others", "nearly collinear, full rank",
     "a layer at 1e-6 of the others' scale"],
)  # fmt: skip
def test_control_rank_is_numpys_matrix_rank(case):
    """rank(C) is numpy's matrix_rank of the standardised control space (the design the fits see, in its float32):
    repeated and collinear layers leave null directions out (they were counted, 26-29 for 24), nearly collinear
    layers and a layer of another scale keep theirs; the basis is orthonormal."""
    control, rank = _control_case(case)
    proj = ControlProjection.of(control)
    assert control.dtype == np.float32
    assert proj.rank == rank == np.linalg.matrix_rank(standardise(control, control)[0])
    np.testing.assert_allclose(proj.basis.T @ proj.basis, np.eye(rank), atol=1e-10)
    if case != "a layer at 1e-6 of the others' scale":
        assert np.linalg.matrix_rank(control - control.mean(0)) == rank


def test_control_space_keeps_a_layers_components_up_to_its_rank():
    """A layer whose 16 columns repeat 8 gives 8 components, not 8 more of rounding (numpy's matrix_rank: 8)."""
    A = np.random.default_rng(8).standard_normal((200, 8))
    layer = np.hstack([A, A @ np.random.default_rng(9).standard_normal((8, 8))])
    assert np.linalg.matrix_rank(layer - layer.mean(0)) == 8
    assert control_space([layer], 16)[1] == [8]


@pytest.mark.filterwarnings("ignore:The design matrix is rank-deficient")
def test_partial_f_degrees_of_freedom_equal_statsmodels_ols():
    """With a layer listed twice, the F-test's denominator degrees of freedom are statsmodels' OLS df_resid of the full
    model (intercept, C, Q), and F and p its compare_f_test against the intercept and C."""
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(7)
    n = 120
    acts, grads = _features(rng, n=n)
    control, _ = control_space([acts[0], acts[1], acts[2], acts[1]], 6)
    proj = ControlProjection.of(control)
    q = gradient_basis(grads[1], proj, 3)
    Y = control @ rng.standard_normal((control.shape[1], 4)) * 0.3 + rng.standard_normal((n, 4))
    Y[:, 0] += 0.4 * np.sqrt(n) * q[:, 0]
    test = partial_f(proj.residual(Y), q, proj.rank)
    C = control.astype(np.float64)
    for t in range(Y.shape[1]):
        full = sm.OLS(Y[:, t], sm.add_constant(np.hstack([C, q]))).fit()
        reduced = sm.OLS(Y[:, t], sm.add_constant(C)).fit()
        f, p, df_diff = full.compare_f_test(reduced)
        assert (test.df_den, test.df_num) == (full.df_resid, df_diff) == (n - 1 - 18 - 3, 3)
        assert test.f[t] == pytest.approx(f, rel=1e-6) and test.p[t] == pytest.approx(p, rel=1e-5, abs=1e-12)


def test_excess_partial_r2_is_the_nested_fits_partial_r2_above_its_beta_null_mean():
    """E_t = (RSS_C - RSS_full) / RSS_C - m / (m + d) from two lstsq fits; under the null (a brain in the control
    space's span) the partial R^2 follows SciPy's Beta(m/2, d/2), so E averages 0; with signal it is positive."""
    rng = np.random.default_rng(3)
    n, m = 300, 4
    acts, grads = _features(rng, n=n)
    control, _ = control_space(acts, 5)
    proj = ControlProjection.of(control)
    q = gradient_basis(grads[2], proj, m)
    Y = control @ rng.standard_normal((control.shape[1], 3000)) + rng.standard_normal((n, 3000))
    Y[:, :20] += 0.3 * np.sqrt(n) * q @ rng.standard_normal((m, 20))
    test = partial_f(proj.residual(Y), q, proj.rank)
    ones = np.ones((n, 1))
    reduced, full = np.hstack([ones, control]), np.hstack([ones, control, q])
    rss = [((Y - X @ np.linalg.lstsq(X, Y, rcond=None)[0]) ** 2).sum(0) for X in (reduced, full)]
    d = test.df_den
    np.testing.assert_allclose(excess_partial_r2(test), (rss[0] - rss[1]) / rss[0] - m / (m + d), rtol=1e-6,
                               atol=1e-12)  # fmt: skip
    null = excess_partial_r2(test)[20:] + m / (m + d)
    assert sps.kstest(null, sps.beta(m / 2, d / 2).cdf).pvalue > 0.001
    assert abs(np.mean(excess_partial_r2(test)[20:])) < 3 * np.std(null) / np.sqrt(len(null))
    assert np.median(excess_partial_r2(test)[:20]) > 5 * np.std(null)


def test_control_space_is_each_layers_pca():
    rng = np.random.default_rng(1)
    acts, _ = _features(rng)
    control, kept = control_space(acts, 7)
    assert kept == [7, 7, 7] and control.shape == (300, 21)
    for k, layer in enumerate(acts):
        scores = PCA(7).fit_transform(layer)
        np.testing.assert_allclose(np.abs(control[:, 7 * k : 7 * (k + 1)]), np.abs(scores), rtol=1e-4, atol=1e-4)


def test_partial_f_is_calibrated_when_gradients_correlate_with_the_activations():
    """A forward-only brain (y in the span of the control space) predicted by gradients that correlate with the
    activations: the per-target F-test fires at its nominal rate (permuting gradient rows would not be this null)."""
    rng = np.random.default_rng(2)
    acts, grads = _features(rng, n=400)
    control, _ = control_space(acts, 20)
    proj = ControlProjection.of(control)
    q = gradient_basis(grads[0], proj, 8)
    Y = control @ rng.standard_normal((control.shape[1], 4000)) * 0.3 + rng.standard_normal((400, 4000))
    assert np.median([abs(np.corrcoef(g, y)[0, 1]) for g, y in zip(grads[0].T, Y.T[:20], strict=True)]) > 0.05
    p = partial_f(proj.residual(Y), q, proj.rank).p
    assert 0.04 <= np.mean(p < 0.05) <= 0.06
    assert sps.kstest(p, "uniform").pvalue > 0.001


def test_summed_test_is_calibrated_with_correlated_targets_and_has_power():
    """Per subject the targets' statistics are summed; correlated targets (MEG sensors) widen the null, which the
    residual correlations account for. Null subjects fire at the nominal rate; a planted signal is found."""
    rng = np.random.default_rng(3)
    null_p, alt_p = [], []
    for _ in range(120):
        acts, grads = _features(rng, n=200, d=10)
        control, _ = control_space(acts, 10)
        proj = ControlProjection.of(control)
        q = gradient_basis(grads[2], proj, 5)
        noise = rng.standard_normal((200, 60)) + 1.5 * rng.standard_normal((200, 3)) @ rng.standard_normal((3, 60))
        Y = control @ rng.standard_normal((30, 60)) * 0.2 + noise
        signal = q @ rng.standard_normal((5, 60)) * np.sqrt(200) * 0.25
        for Yk, out in ((Y, null_p), (Y + signal, alt_p)):
            tests, _, p = f_tests(proj, [q], Yk, np.zeros(60, dtype=int))
            out.append(p[0, 0])
    assert 0.02 <= np.mean(np.array(null_p) < 0.05) <= 0.09
    assert np.mean(np.array(alt_p) < 0.05) >= 0.8


def test_summed_test_ignores_no_correlation_and_matches_the_chi_square():
    """Independent targets and a large d: the sum of m F_t is close to chi^2(m t) and its p to the exact one."""
    rng = np.random.default_rng(4)
    n, t, m = 2000, 50, 3
    q = np.linalg.qr(rng.standard_normal((n, m)) - rng.standard_normal((n, m)).mean(0))[0]
    Y = rng.standard_normal((n, t))
    proj = ControlProjection(np.zeros((n, 0)))
    test = partial_f(proj.residual(Y), q, 0)
    res = proj.residual(Y)
    z = (res - res.mean(0)) / res.std(0)
    stat, p = summed_f(test, float(((z.T @ z) ** 2).sum()), n)
    assert p == pytest.approx(sps.chi2.sf(stat, m * t), abs=0.02)


def test_joint_fit_partition_and_layers():
    """Joint R^2 is the banded ridge's; the variance parts add up; a layer whose gradients carry the signal has the
    smallest subject p, and Bonferroni over layers is min(1, L min p)."""
    rng = np.random.default_rng(5)
    acts, grads = _features(rng, n=300)
    control, _ = control_space(acts, 10)
    proj = ControlProjection.of(control)
    Y = control @ rng.standard_normal((30, 12)) * 0.2 + rng.standard_normal((300, 12))
    Y += np.sqrt(300) * gradient_basis(grads[2], proj, 3) @ rng.standard_normal((3, 12))
    folds = make_folds(300, 5)
    solver = {"backend": "numpy", "dtype": "float64"}
    gammas = np.array([[0.5, 0.5], [1.0, 0.0]])
    fit = joint_fit(control, grads, Y, folds, ALPHAS, gammas, 6, solver)
    direct = CrossValidatedBandedRidge([control, grads[2]], folds, gammas, ALPHAS, **solver).score(Y)
    np.testing.assert_allclose(fit.r2_joint[2], direct.r2, atol=1e-10)
    assert fit.layer_p[:, 0].argmin() == 2 and fit.layer_p[2, 0] < 1e-6
    assert combine_layers(fit.layer_p)[0] == pytest.approx(min(1.0, 3 * fit.layer_p[:, 0].min()))
    r2_control = CrossValidatedRidge(control, folds, ALPHAS, **solver).score(Y).r2
    r2_single = CrossValidatedRidge(grads[2], folds, ALPHAS, **solver).score(Y).r2
    parts = variance_parts(r2_control, r2_single, fit.r2_joint[2])
    np.testing.assert_allclose(parts["unique_gradients"] + parts["shared"] + parts["unique_activations"],
                               fit.r2_joint[2], atol=1e-12)  # fmt: skip
    assert np.median(parts["unique_gradients"]) > 0.05


def test_a_layer_of_low_rank_does_not_narrow_the_test_of_the_others():
    """Each layer is tested on its own m_k = min(components, its rank outside C) directions, as the nested OLS
    comparison of that layer alone would be: a last block whose gradients span a few classes (rank 3 here) leaves
    the other layers' F-tests at ``components`` directions (one common m, the smallest, lost their signal)."""
    rng = np.random.default_rng(8)
    acts, grads = _features(rng, n=300)
    grads[2] = grads[2][:, :3] @ rng.standard_normal((3, 20))  # rank 3, as a head's W'(p - y) over few classes
    control, _ = control_space(acts, 5)
    proj = ControlProjection.of(control)
    q0 = gradient_basis(grads[0], proj, 6)
    Y = rng.standard_normal((300, 8))
    Y += 3 * q0[:, 3:] @ rng.standard_normal((3, 8))  # signal in layer 0's 4th-6th directions only
    args = (Y, make_folds(300, 5), ALPHAS, np.array([[1.0, 0.0]]), 6, {"backend": "numpy"})
    fit = joint_fit(control, grads, *args)
    assert fit.df_num.tolist() == [6, 6, 3]
    ones = np.ones((300, 1))
    reduced, full = np.hstack([ones, control]), np.hstack([ones, control, q0])
    rss = [((Y - X @ np.linalg.lstsq(X, Y, rcond=None)[0]) ** 2).sum(0) for X in (reduced, full)]
    df = 300 - np.linalg.matrix_rank(full)
    np.testing.assert_allclose(fit.f_p[0], sps.f.sf(((rss[0] - rss[1]) / 6) / (rss[1] / df), 6, df), rtol=1e-6)
    assert fit.layer_p[0, 0] < 1e-6


def test_placebos_go_through_the_same_f_tests_as_the_kind():
    """Each placebo's mean excess partial R^2 per layer and group is what the kind's would be were the placebo the
    kind (same C, same m); the kind's own is the per-group mean of its per-target excess; readers are called once."""
    rng = np.random.default_rng(6)
    acts, grads = _features(rng, n=300)
    control, _ = control_space(acts, 10)
    Y = rng.standard_normal((300, 20))
    Y[:, :10] += 3 * gradient_basis(grads[1], ControlProjection.of(control), 3) @ rng.standard_normal((3, 10))
    groups = np.repeat([0, 1], 10)
    placebos = [[g + rng.standard_normal(g.shape) for g in grads] for _ in range(3)]
    calls = []

    def reader(x):
        return lambda: calls.append(1) or x

    args = (control, grads, Y, make_folds(300, 5), ALPHAS, np.array([[1.0, 0.0]]), 4, {"backend": "numpy"}, groups)
    fit = joint_fit(*args, placebos=[[reader(x) for x in p] for p in placebos])
    assert fit.placebo_excess.shape == (3, 3, 2) and len(calls) == 9
    for g in (0, 1):
        np.testing.assert_allclose(fit.layer_excess[:, g], fit.excess_r2[:, groups == g].mean(1), rtol=1e-12)
    for j, p in enumerate(placebos):
        alone = joint_fit(control, p, *args[2:])
        np.testing.assert_allclose(fit.placebo_excess[j], alone.layer_excess, rtol=1e-10, atol=1e-14)
    assert fit.layer_excess[1, 0] > 1.5 * fit.placebo_excess[:, 1, 0].max(), "the kind carries the signal"


def test_a_partition_too_large_for_the_images_is_refused_before_any_fit():
    """The bound is the partial F-test's own: 52 images cannot hold 4 x 32 control + 32 gradient directions."""
    cfg = {"control_components": 32, "gradient_components": 32}
    with pytest.raises(ValueError, match=r"sub-1\.zarr: 52 training images.*control_components"):
        check_partition_fits(52, [64, 64, 128, 128], cfg, "brain/sub-1.zarr")
    small = {"control_components": 4, "gradient_components": 4}
    check_partition_fits(52, [64, 64, 128, 128], small, "brain/sub-1.zarr")  # 52 - 1 - 16 - 4 = 31 left
    narrow = {"control_components": 32, "gradient_components": 8}
    check_partition_fits(52, [2, 2, 2, 2], narrow, "brain/sub-1.zarr")  # narrow layers keep all 8 dimensions
    with pytest.raises(ValueError, match="-35 residual"):  # 52 - 1 - 4 x 10 - 46
        check_partition_fits(52, [50, 50, 50, 50], {"control_components": 10, "gradient_components": 46}, "b")


def _previous_summed_test(proj, q, Y, groups):
    """The summed test as it was computed before (issue 24, item 10): the (n, n) Gram Z Z' of each group's
    standardised residuals, ||Z Z'||_F^2 = ||Z'Z||_F^2."""
    res = proj.residual(Y)
    z = (res - res.mean(0)) / res.std(0)
    test = partial_f(res, q, proj.rank)
    return [summed_f(test.subset(groups == g), float(((z[:, groups == g] @ z[:, groups == g].T) ** 2).sum()), len(Y))
            for g in np.unique(groups)]  # fmt: skip


def test_summed_test_by_target_blocks_matches_the_gram_and_never_holds_an_n_by_n_array():
    """The residual correlations come from pairs of target blocks (Z_a' Z_b), never the (n, n) Gram matrix: the
    F-tests' peak allocation stays far below n^2 float64 (72 MB at n = 3000) and the p-values are the Gram route's
    to 1e-10, with targets of two groups interleaved and a batch that splits each group into uneven blocks."""
    import tracemalloc

    rng = np.random.default_rng(8)
    n, t = 3000, 90
    control = rng.standard_normal((n, 6))
    proj = ControlProjection.of(control)
    q = gradient_basis(rng.standard_normal((n, 8)), proj, 3)
    Y = rng.standard_normal((n, t)) + rng.standard_normal((n, 2)) @ rng.standard_normal((2, t))
    groups = np.arange(t) % 2
    tracemalloc.start()
    _, stat, p = f_tests(proj, [q], Y, groups, batch=20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < n * n * 8 / 4
    before = _previous_summed_test(proj, q, Y, groups)
    np.testing.assert_allclose(stat[0], [s for s, _ in before], rtol=1e-10)
    np.testing.assert_allclose(p[0], [x for _, x in before], rtol=1e-8)
