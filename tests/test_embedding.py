"""Tests for derive.embedding: numbers against hand computations, layouts by behaviour.

Layouts are never compared coordinate by coordinate (they depend on the backend and its version):
they are judged by what the maps must show, with the bounds stated next to each assertion.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial import procrustes
from sklearn.manifold import trustworthiness
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from deepeyes_keras.derive.embedding import (
    FilterMap,
    carry_layout,
    filter_map,
    input_map,
    perplexity_of,
)

METHODS = ["opentsne", "sklearn"]


def _clusters(n=600, dim=20, centers=4, seed=0):
    """Well-separated Gaussian clusters: centres 10 apart per axis on average, unit noise."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 10.0, size=(centers, dim))
    labels = rng.integers(0, centers, size=n)
    return means[labels] + rng.normal(size=(n, dim)), labels


def _weighted_jaccard(acts):
    """Reference phi_ij = sum min(a_i, a_j) / sum max(a_i, a_j) over instances (rows)."""
    a = np.maximum(acts, 0.0)
    lo = np.minimum(a[:, :, None], a[:, None, :]).sum(axis=0)
    hi = np.maximum(a[:, :, None], a[:, None, :]).sum(axis=0)
    return np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), 0.0)


# --- perplexity_of -------------------------------------------------------------------------------


def test_perplexity_of_matches_hand_computation():
    rows = np.array(
        [
            [0.0, 5.0, 0.0, 0.0],  # one filter responds: P = 1
            [2.0, 2.0, 2.0, 2.0],  # all alike: P = F = 4
            [0.0, 0.0, 0.0, 0.0],  # none responds: uniform, P = F = 4
            [-3.0, 2.0, 2.0, -1.0],  # clamped to [0, 2, 2, 0]: P = 2
            [1.0, 3.0, 0.0, 0.0],  # p = (1/4, 3/4): P = 2**H by hand
            [np.nan, 1.0, np.inf, -np.inf],  # non-finite -> 0: one filter, P = 1
        ]
    )
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    expected = np.array([1.0, 4.0, 4.0, 2.0, 2.0**h, 1.0])
    got = perplexity_of(rows)
    assert got.shape == (6,)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_perplexity_of_stays_in_range_and_rejects_bad_shapes():
    a = np.random.default_rng(0).normal(size=(500, 7))
    p = perplexity_of(a)
    assert p.min() >= 1.0 and p.max() <= 7.0
    assert perplexity_of(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="reshape"):
        perplexity_of(np.ones(4))
    with pytest.raises(ValueError, match="at least one filter"):
        perplexity_of(np.ones((3, 0)))


# --- input_map -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_input_map_separates_clusters_and_keeps_neighbourhoods(method):
    x, labels = _clusters()
    xy = input_map(x, seed=0, method=method)
    assert xy.shape == (600, 2) and np.isfinite(xy).all()
    # Bounds: 5-NN accuracy on the layout (5-fold CV) >= 0.95; trustworthiness(k=10) >= 0.9.
    accuracy = cross_val_score(KNeighborsClassifier(n_neighbors=5), xy, labels, cv=5).mean()
    assert accuracy >= 0.95
    assert trustworthiness(x, xy, n_neighbors=10) >= 0.9


def test_input_map_is_deterministic_and_reports_progress():
    x, _ = _clusters(n=200, dim=10)
    calls = []
    first = input_map(x, seed=3, method="opentsne", progress=lambda f, m: calls.append((f, m)))
    np.testing.assert_array_equal(first, input_map(x, seed=3, method="opentsne"))
    fractions = [f for f, _ in calls]
    assert len(calls) >= 5 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in calls)


@pytest.mark.parametrize("method", METHODS)
def test_input_map_from_previous_layout_stays_comparable(method):
    # Consecutive snapshots: descriptors drift a little; starting from the previous layout keeps the
    # picture in place. Bound: Procrustes disparity (scale- and rotation-free) < 0.1.
    x, _ = _clusters(n=400, dim=20, seed=1)
    before = input_map(x, seed=0, method=method)
    drifted = x + np.random.default_rng(2).normal(0.0, 0.1, size=x.shape)
    after = input_map(drifted, init=before, seed=1, method=method)
    assert procrustes(before, after)[2] < 0.1
    # The bound is not met by chance: started from an unrelated layout, the picture moves.
    scrambled = np.random.default_rng(3).normal(size=before.shape)
    assert procrustes(before, input_map(drifted, init=scrambled, seed=1, method=method))[2] > 0.1


def test_input_map_degenerate_inputs_do_not_crash():
    rng = np.random.default_rng(0)
    # Fewer than 4 points: exact PCA coordinates (1 point at the origin), or init when given.
    assert input_map(np.zeros((0, 5))).shape == (0, 2)
    np.testing.assert_array_equal(input_map(rng.normal(size=(1, 5))), [[0.0, 0.0]])
    three = rng.normal(size=(3, 5))
    xy = input_map(three)
    d_in = np.linalg.norm(three[:, None] - three[None], axis=-1)
    np.testing.assert_allclose(np.linalg.norm(xy[:, None] - xy[None], axis=-1), d_in, atol=1e-9)
    init = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(input_map(three, init=init), init)
    # Constant descriptors: nothing to show, all points at the origin.
    np.testing.assert_array_equal(input_map(np.ones((50, 4))), np.zeros((50, 2)))
    # NaN/inf are replaced by 0; half the points exact duplicates (MNIST background patches).
    x = rng.normal(size=(120, 6))
    x[:60] = 0.0
    x[3, 2], x[70, 1] = np.nan, np.inf
    for method in METHODS:
        out = input_map(x, perplexity=50, n_iter=250, method=method)
        assert out.shape == (120, 2) and np.isfinite(out).all()


def test_input_map_rejects_bad_arguments():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match=r"init must be a finite \(20, 2\) layout"):
        input_map(x, init=np.zeros((20, 3)))
    with pytest.raises(ValueError, match=r"init must be a finite \(20, 2\) layout"):
        input_map(x, init=np.zeros((19, 2)))
    with pytest.raises(ValueError, match="method='umap'"):
        input_map(x, method="umap")
    with pytest.raises(ValueError, match="perplexity=0"):
        input_map(x, perplexity=0)
    with pytest.raises(ValueError, match="n_iter=0"):
        input_map(x, n_iter=0)
    with pytest.raises(TypeError, match="seed=1.5"):
        input_map(x, seed=1.5)
    with pytest.raises(TypeError, match="progress"):
        input_map(x, progress="verbose")
    with pytest.raises(TypeError, match="numeric"):
        input_map(np.array([["a", "b"]]))


# --- carry_layout --------------------------------------------------------------------------------


def test_carry_layout_keeps_shared_points_and_places_new_ones_near_their_kin():
    x, labels = _clusters(n=300, dim=8, centers=3, seed=4)
    prev_ids = np.arange(200)
    prev_xy = np.random.default_rng(5).normal(size=(200, 2)) * 0.1 + labels[:200, None] * 10.0
    new_ids = np.arange(100, 300)  # ids 100..199 shared, 200..299 new
    new_x = x[100:300]
    for prev_desc in (x[:200], None):
        init = carry_layout(prev_ids, prev_xy, new_ids, new_x, prev_desc)
        assert init.shape == (200, 2)
        np.testing.assert_array_equal(init[:100], prev_xy[100:200])  # exactly kept
        # A new point lands on its cluster's spot (clusters sit 10 apart on both axes).
        np.testing.assert_allclose(init[100:], labels[200:300, None] * 10.0 * np.ones(2), atol=1.0)
    # No shared ids, no history: PCA coordinates spread like the previous layout.
    prev = np.array([[0.0, 0.0], [4.0, 1.0], [8.0, 0.0], [4.0, -1.0]])
    init = carry_layout([0, 1, 2, 3], prev, [7, 8, 9], x[:3])
    np.testing.assert_allclose(init.std(axis=0), prev.std(axis=0), rtol=1e-9)
    np.testing.assert_allclose(init.mean(axis=0), prev.mean(axis=0), atol=1e-9)
    # The result feeds input_map directly.
    assert input_map(new_x, init=carry_layout(prev_ids, prev_xy, new_ids, new_x)).shape == (200, 2)


def test_carry_layout_rejects_inconsistent_inputs():
    xy = np.zeros((3, 2))
    with pytest.raises(ValueError, match="duplicate"):
        carry_layout([1, 1, 2], xy, [1], np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"prev_layout must be a finite \(3, 2\) layout"):
        carry_layout([1, 2, 3], np.zeros((2, 2)), [1], np.zeros((1, 2)))
    with pytest.raises(ValueError, match="one descriptor row per new id"):
        carry_layout([1, 2, 3], xy, [1, 4], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="prev_descriptors has shape"):
        carry_layout([1, 2, 3], xy, [1, 4], np.zeros((2, 2)), np.zeros((3, 5)))


# --- filter_map ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_filter_map_puts_identical_filters_next_to_each_other(method):
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(400, 40)) + rng.normal(size=40), 0.0)
    acts[:, 7] = acts[:, 23]  # filters 7 and 23 fire identically: phi = 1, identical rows
    phi = _weighted_jaccard(acts)
    assert phi[7, 23] == 1.0 and np.array_equal(phi[7], phi[23])
    fm = filter_map(phi, rng.random((40, 10)), seed=0, method=method)
    assert isinstance(fm, FilterMap) and fm.xy.shape == (40, 2) and np.isfinite(fm.xy).all()
    assert fm.perplexity_used == 13.0  # min(40 // 3, 30)
    _, nearest = NearestNeighbors(n_neighbors=2).fit(fm.xy).kneighbors(fm.xy[[7, 23]])
    assert nearest[0, 1] == 23 and nearest[1, 1] == 7


def test_backends_read_precomputed_matrices_as_distances():
    # filter_map hands both backends the distances 1 - phi, because each squares a precomputed
    # matrix itself. Pinned here (precomputed == euclidean on the same points) in case a release
    # changes it; copies because scikit-learn updates init, and may square X, in place.
    from openTSNE.affinity import PerplexityBasedNN
    from sklearn.manifold import TSNE
    from sklearn.metrics import pairwise_distances

    x = np.random.default_rng(0).normal(size=(60, 5))
    dist = pairwise_distances(x)
    euclidean = PerplexityBasedNN(x, perplexity=5, method="exact", random_state=0).P
    precomputed = PerplexityBasedNN(dist, perplexity=5, metric="precomputed", random_state=0).P
    np.testing.assert_allclose(precomputed.toarray(), euclidean.toarray(), atol=1e-12)
    y0 = np.random.default_rng(1).normal(0.0, 1e-4, size=(60, 2))

    def sk(data, **metric):
        tsne = TSNE(perplexity=5, init=y0.copy(), max_iter=300, random_state=0, **metric)
        return tsne.fit_transform(data.copy())

    np.testing.assert_allclose(sk(dist, metric="precomputed"), sk(x), atol=1e-6)
    assert not np.allclose(sk(dist**2, metric="precomputed"), sk(x), atol=1e-3)


def test_filter_map_labels_and_strength():
    d = 10
    t = np.zeros((6, d))
    t[0, 3] = 5.0  # driven only by label 3
    t[1] = 1.0  # indifferent to labels
    # t[2] stays 0: never fired
    t[3, [1, 4]] = [1.0, 3.0]  # mostly label 4
    t[4, 6] = 2.0
    t[4, 0] = -1.0  # negative sums are clamped to 0
    t[5, 9] = 1.0
    fm = filter_map(np.eye(6), t, seed=0)
    # The indifferent filter's label is the first argmax (0); its strength 0 says it means nothing.
    assert fm.label.tolist() == [3, 0, -1, 4, 6, 9]
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    expected = [1 - 1 / d, 0.0, 0.0, 1 - 2.0**h / d, 1 - 1 / d, 1 - 1 / d]
    np.testing.assert_allclose(fm.strength, expected, atol=1e-9)


@pytest.mark.parametrize("n_filters", [1, 2, 3, 4])
def test_filter_map_tiny_layers(n_filters):
    phi = np.full((n_filters, n_filters), 0.25)
    np.fill_diagonal(phi, 1.0)
    fm = filter_map(phi, np.eye(n_filters, 2), seed=0, n_iter=250)
    assert fm.xy.shape == (n_filters, 2) and np.isfinite(fm.xy).all()
    assert fm.label.shape == fm.strength.shape == (n_filters,)
    if n_filters == 1:
        np.testing.assert_array_equal(fm.xy, [[0.0, 0.0]])
    if n_filters in (2, 3):  # exact layout: pairwise distances 1 - phi = 0.75
        dist = np.linalg.norm(fm.xy[:, None] - fm.xy[None], axis=-1)
        np.testing.assert_allclose(dist, 0.75 * (1 - np.eye(n_filters)), atol=1e-9)


def test_filter_map_rejects_bad_inputs():
    t = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"square \(F, F\)"):
        filter_map(np.ones((4, 3)), t)
    with pytest.raises(ValueError, match=r"expected \(4, d\)"):
        filter_map(np.eye(4), np.ones((5, 3)))
    nan_phi = np.eye(4)
    nan_phi[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"nan_to_num"):
        filter_map(nan_phi, t)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        filter_map(np.eye(4) * 3, t)
    with pytest.raises(ValueError, match="n_iter=100"):
        filter_map(np.eye(4), t, n_iter=100)


def test_filter_map_from_a_previous_layout():
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(400, 40)) + rng.normal(size=40), 0.0)
    phi, t = _weighted_jaccard(acts), rng.random((40, 10))
    before = filter_map(phi, t, seed=0, n_iter=300, theta=0.8)
    # n_iter=0 keeps the layout exactly; labels and strengths are those of the new inputs
    kept = filter_map(phi, np.eye(40, 10), seed=0, init=before.xy, n_iter=0)
    np.testing.assert_array_equal(kept.xy, before.xy)
    assert kept.label[:3].tolist() == [0, 1, 2] and kept.perplexity_used == 13.0
    # A short run from it stays comparable (bound: Procrustes disparity < 0.1) and is reproducible
    acts[:, 7] = acts[:, 23]  # and the data changed: two filters now fire identically
    moved = _weighted_jaccard(acts)
    after = filter_map(moved, t, seed=0, init=before.xy, n_iter=100, theta=0.8, init_std=1e-2)
    assert procrustes(before.xy, after.xy)[2] < 0.1
    np.testing.assert_array_equal(
        after.xy, filter_map(moved, t, seed=0, init=before.xy, n_iter=100, theta=0.8,
                             init_std=1e-2).xy)  # fmt: skip
    _, nearest = NearestNeighbors(n_neighbors=2).fit(after.xy).kneighbors(after.xy[[7, 23]])
    assert nearest[0, 1] == 23 and nearest[1, 1] == 7
    # Not met by chance: from a random start, the same run lands elsewhere.
    fresh = filter_map(moved, t, seed=0, n_iter=300, theta=0.8)
    assert procrustes(before.xy, fresh.xy)[2] > 0.1
    with pytest.raises(ValueError, match=r"init must be a finite \(40, 2\) layout"):
        filter_map(phi, t, init=np.zeros((39, 2)), n_iter=0)
    with pytest.raises(ValueError, match="init_std=0"):
        filter_map(phi, t, init=before.xy, n_iter=10, init_std=0)


def test_theta_reaches_openTSNE_and_small_sets_run_exactly(monkeypatch):
    import openTSNE

    from deepeyes_keras.derive import tsne

    seen = []

    class Spy(openTSNE.TSNEEmbedding):
        def __new__(cls, *args, **kwargs):
            seen.append((len(args[0]), kwargs["theta"]))
            return super().__new__(cls, *args, **kwargs)

    monkeypatch.setattr(openTSNE, "TSNEEmbedding", Spy)
    x, _ = _clusters(n=150, dim=5)
    input_map(x, seed=0, n_iter=5, early_iter=0, theta=0.8, method="opentsne")
    input_map(x[:60], seed=0, n_iter=5, early_iter=0, theta=0.8, method="opentsne")
    filter_map(np.eye(20) * 0.5 + 0.5, np.ones((20, 3)), n_iter=250, theta=0.8)
    assert seen == [(150, 0.8), (60, 0.0), (20, 0.0)]  # below tsne.EXACT_BELOW: exact gradient
    assert tsne.EXACT_BELOW == 100
    with pytest.raises(ValueError, match="theta=1.5"):
        input_map(x, theta=1.5)
    with pytest.raises(ValueError, match="theta=0"):
        filter_map(np.eye(5), np.ones((5, 2)), theta=0)
    with pytest.raises(ValueError, match="init_std=-1"):
        input_map(x, init_std=-1)


def test_collapse_duplicates_matches_a_row_by_row_reference():
    from deepeyes_keras.derive.embedding import collapse_duplicates

    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 6))
    x = base[rng.integers(0, 30, 200)] + rng.choice([0.0, 1e-5, 0.05], size=(200, 1))
    x[:5] = -0.0  # equal to 0.0
    x[5:10] = 0.0
    for tolerance in (0.0, 1e-3, 0.1):
        got = collapse_duplicates(x, tolerance=tolerance)
        top = np.abs(x).max()
        keys = np.rint(x / (tolerance * top)) if tolerance else x
        # reference: rows equal when all their keys are equal, numbered by first appearance
        groups, point = {}, []
        for row in map(tuple, keys + 0.0):
            point.append(groups.setdefault(row, len(groups)))
        np.testing.assert_array_equal(got.point, point)
        first = [point.index(p) for p in range(len(groups))]
        np.testing.assert_array_equal(got.first, first)
        np.testing.assert_array_equal(got.weight, np.bincount(point))
    assert got.point[0] == got.point[9]  # -0.0 and 0.0 are one point
