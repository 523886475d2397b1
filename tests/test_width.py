"""T4 width estimates on constructed activations with known answers."""

import math

import numpy as np
import pytest

from deepeyes_keras.derive import width as wd


def reference_eigenvalues(x: np.ndarray) -> np.ndarray:
    """Independent reference: singular values of the centred data, padded to F."""
    xc = x - x.mean(axis=0)
    s = np.linalg.svd(xc, compute_uv=False)
    out = np.zeros(x.shape[1])
    out[: len(s)] = s**2 / (len(x) - 1)
    return out


def subspace(n: int, k: int, f: int, *, noise: float, seed: int) -> np.ndarray:
    """n instances in a random k-dimensional subspace of R^F, plus isotropic noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(f, k)))[0].T  # k orthonormal directions
    return rng.normal(size=(n, k)) @ basis + noise * rng.normal(size=(n, f))


def exact_covariance(eigenvalues, n: int = 400, seed: int = 0) -> np.ndarray:
    """Activations whose sample covariance is exactly diag(eigenvalues)."""
    lam = np.asarray(eigenvalues, np.float64)
    z = np.random.default_rng(seed).normal(size=(n, len(lam)))
    q = np.linalg.qr(z - z.mean(axis=0))[0]  # orthonormal and centred columns
    return 3.0 + q * np.sqrt((n - 1) * lam)


# --- spectrum ------------------------------------------------------------------------------


@pytest.mark.parametrize("n, f", [(300, 20), (15, 40), (40, 40)])
def test_spectrum_matches_svd_reference(n, f):
    rng = np.random.default_rng(n + f)
    x = rng.normal(size=(n, f)) @ rng.normal(size=(f, f)) + 5.0
    got = wd.spectrum(x)
    ref = reference_eigenvalues(x)
    assert got.eigenvalues.shape == (f,) and got.instances == n and got.dropped == 0
    assert np.all(np.diff(got.eigenvalues) <= 0) and np.all(got.eigenvalues >= 0)
    np.testing.assert_allclose(got.eigenvalues, ref, rtol=1e-7, atol=1e-9 * ref.max())
    if n < f:  # at most n - 1 directions can show
        assert np.all(got.eigenvalues[n - 1 :] <= 1e-9 * ref.max())


def test_spectrum_drops_nonfinite_rows_and_counts_them():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 6))
    bad = x.copy()
    bad[[3, 50]] = np.nan
    bad[70, 2] = np.inf
    got = wd.spectrum(bad)
    assert got.dropped == 3 and got.instances == 97
    finite = np.delete(x, [3, 50, 70], axis=0)
    np.testing.assert_allclose(got.eigenvalues, reference_eigenvalues(finite), rtol=1e-9)


def test_constant_columns_add_exactly_nothing():
    rng = np.random.default_rng(2)
    live = rng.normal(size=(200, 5))
    # Constants whose mean rounds (0.1, 1e6 + 0.3) must still count as no variance at all.
    x = np.hstack([live, np.full((200, 3), 0.1), np.full((200, 2), 1e6 + 0.3), np.zeros((200, 4))])
    got = wd.spectrum(x).eigenvalues
    assert np.all(got[5:] == 0.0)
    np.testing.assert_allclose(got[:5], reference_eigenvalues(live), rtol=1e-9)


def test_spectrum_rejects_a_vector():
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        wd.spectrum(np.ones(5))


# --- explained-variance width ----------------------------------------------------------------


@pytest.mark.parametrize("k, f", [(5, 64), (12, 64), (5, 500), (12, 500)])
def test_subspace_gives_its_dimension(k, f):
    x = subspace(2000, k, f, noise=0.005, seed=k * f)
    w = wd.explained_variance_width(x, delta=0.99)
    assert abs(w.k - k) <= 1
    assert w.saturation == pytest.approx(w.k / f)
    assert len(w.cumulative) == f and w.cumulative[-1] == pytest.approx(1.0)
    assert np.all(np.diff(w.cumulative) >= -1e-12)
    r = wd.signal_rank(x)
    assert r.rank == k and r.method == "gavish-donoho"
    s = wd.suggested_width(x)
    # The suggestion leaves the factor of slack the retraining evidence asked for.
    assert s.cut and s.width == 2 * k and not s.sample_limited
    assert "verify by retraining" in s.text


def test_near_duplicate_filters_count_once():
    rng = np.random.default_rng(3)
    signals = np.maximum(rng.normal(size=(2000, 10)), 0)  # 10 distinct ReLU signals
    x = np.repeat(signals, 4, axis=1) + 1e-3 * rng.normal(size=(2000, 40))
    s = wd.suggested_width(x)
    assert abs(s.variance.k - 10) <= 1 and s.signal.rank == 10
    assert s.cut and s.width == 20


def test_dead_filters_are_not_counted():
    rng = np.random.default_rng(4)
    x = np.zeros((1000, 32))
    x[:, :8] = np.maximum(rng.normal(size=(1000, 8)), 0)
    w = wd.explained_variance_width(x)
    assert w.k == 8
    s = wd.suggested_width(x, dead=list(range(8, 32)))
    assert s.signal.rank == 8
    assert s.dead == 24 and s.suggested == 8 and s.cut and s.width == 8  # capped by the live 8
    # Dead filters cap the suggestion even where they vary (a layer without ReLU).
    full = rng.normal(size=(1000, 16))
    capped = wd.suggested_width(full, dead=range(10))
    assert capped.variance.k >= 15 and capped.suggested == 6 and capped.cut


def test_right_sized_layer_suggests_no_cut():
    rng = np.random.default_rng(5)
    scales = rng.uniform(0.5, 1.5, 16)
    x = rng.normal(size=(2000, 16)) * scales @ np.linalg.qr(rng.normal(size=(16, 16)))[0]
    s = wd.suggested_width(x)
    assert s.variance.k >= 14
    assert not s.cut and s.width == 16 and "no cut" in s.text


def test_small_difference_is_no_cut_but_a_quarter_is():
    t = wd.WidthThresholds(min_cut=0.25, width_factor=1.0)
    assert not wd.suggested_width(exact_covariance([1.0] * 13 + [0.0] * 3), thresholds=t).cut
    cut = wd.suggested_width(exact_covariance([1.0] * 11 + [0.0] * 5), thresholds=t)
    assert cut.cut and cut.width == 11
    # With the default slack the same layer keeps its width: 2 x 11 is not below 16.
    assert not wd.suggested_width(exact_covariance([1.0] * 11 + [0.0] * 5)).cut


def test_participation_ratio_and_effective_rank_on_a_diagonal_spectrum():
    w = wd.explained_variance_width(exact_covariance([4.0, 3.0, 2.0, 1.0, 0.0, 0.0]))
    # Hand-computed: p = (0.4, 0.3, 0.2, 0.1); PR = 10^2 / 30; H = 1.279854 nats.
    assert w.participation_ratio == pytest.approx(100 / 30, rel=1e-9)
    assert w.effective_rank == pytest.approx(math.exp(1.2798542258), rel=1e-8)
    np.testing.assert_allclose(w.cumulative, [0.4, 0.7, 0.9, 1.0, 1.0, 1.0], atol=1e-12)
    assert w.k == 4 and w.total_variance == pytest.approx(10.0)
    assert wd.explained_variance_width(exact_covariance([4.0, 3, 2, 1, 0, 0]), delta=0.9).k == 3
    assert wd.explained_variance_width(exact_covariance([4.0, 3, 2, 1, 0, 0]), delta=0.7).k == 2
    flat = wd.explained_variance_width(exact_covariance([2.0] * 4))
    assert flat.participation_ratio == pytest.approx(4) and flat.effective_rank == pytest.approx(4)


def test_degenerate_layers_have_defined_answers():
    zero = wd.explained_variance_width(np.zeros((100, 8)))
    assert (zero.k, zero.saturation, zero.cumulative) == (0, 0.0, [])
    assert (zero.participation_ratio, zero.effective_rank, zero.rank_limit) == (0.0, 0.0, 8)
    dead = wd.suggested_width(np.zeros((100, 8)))  # silent on plenty of instances: width 1
    assert dead.cut and dead.width == 1
    for few in (np.ones((1, 8)), np.zeros((0, 8))):
        w = wd.explained_variance_width(few)
        assert w.k == 0 and w.rank_limit == 0
        s = wd.suggested_width(few)
        assert s.sample_limited and not s.cut and s.width == 8


def test_too_few_instances_for_the_width_suggest_no_cut():
    x = np.random.default_rng(6).normal(size=(20, 64))  # full rank, but only 19 directions show
    s = wd.suggested_width(x)
    assert s.variance.rank_limit == 19 and s.variance.k >= 18
    assert s.sample_limited and not s.cut and s.width == 64


def test_raw_estimate_is_not_inflated_by_clamping():
    # One signal read with loadings of both signs (a conv layer without ReLU): one direction.
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1000, 1)) * np.array([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    assert wd.explained_variance_width(x).k == 1
    assert wd.explained_variance_width(x, clamp=True).k == 2  # positive and negative halves


def test_redundancy_width_is_shown_beside():
    x = np.random.default_rng(8).normal(size=(500, 10))
    s = wd.suggested_width(x, dead=[9], redundant_groups=[[0, 1, 2], [3, 4]])
    assert s.redundancy_width == 10 - 1 - 3


def test_invalid_thresholds_say_what_was_received():
    with pytest.raises(ValueError, match=r"delta=0.*min_cut=1\.5"):
        wd.WidthThresholds(delta=0, min_cut=1.5)
    with pytest.raises(ValueError, match="width_factor=0.5"):
        wd.WidthThresholds(width_factor=0.5)
    with pytest.raises(ValueError, match="delta=1.2"):
        wd.explained_variance_width(np.ones((3, 3)), delta=1.2)
    with pytest.raises(ValueError, match="12 dead"):
        wd.suggested_width(np.ones((3, 8)), dead=12)


# --- signal rank: the noise of a finite sample -------------------------------------------------


def test_noise_of_a_wide_layer_does_not_inflate_the_rank():
    # 5 directions in a 500-wide layer, noise holding a few percent of the variance, 900
    # instances (LeNet fc1's reservoir): k(0.99) runs into the noise, the signal rank does not.
    x = subspace(900, 5, 500, noise=0.03, seed=11)
    w = wd.explained_variance_width(x)
    r = wd.signal_rank(x)
    assert w.k > 100
    assert r.rank == 5 and r.method == "gavish-donoho" and r.noise_share < 0.5
    s = wd.suggested_width(x)
    assert s.cut and s.width == 10


def test_a_layer_using_every_direction_shows_no_noise_floor():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(2000, 16)) * rng.uniform(0.5, 1.5, 16)
    r = wd.signal_rank(x)
    assert r.method == "variance" and r.noise_share > 0.5 and r.rank >= 15


def test_marchenko_pastur_median_matches_a_monte_carlo_sample():
    rng = np.random.default_rng(13)
    for n, f in ((4000, 1000), (2000, 1000)):
        z = rng.normal(size=(n, f))
        eig = np.linalg.eigvalsh(z.T @ z / n)
        assert wd.marchenko_pastur_median(f / n) == pytest.approx(np.median(eig), rel=0.01)


def test_gavish_donoho_omega_at_the_papers_values():
    # Gavish and Donoho give omega(1) ~ 2.858 for square matrices, and 1.43 + 1.82 beta near 0.
    assert wd.gavish_donoho_omega(1.0) == pytest.approx(2.858, abs=0.01)
    assert wd.gavish_donoho_omega(1e-6) == pytest.approx(1.43, abs=1e-3)
