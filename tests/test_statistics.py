"""The TF statistics against an independent NumPy reference (viewer_site/reference/metrics.md)."""

import numpy as np
import pytest
import tensorflow as tf

from deepeyes_keras.record import statistics as st

RTOL = 1e-5  # float32 arithmetic against float64 NumPy


def np_perplexity(a):
    a = np.maximum(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0), 0.0).astype(np.float64)
    out = []
    for row in a:
        total = row.sum()
        p = row / total if total > 0 else np.full_like(row, 1.0 / len(row))
        nz = p[p > 0]
        out.append(2.0 ** (-(nz * np.log2(nz)).sum()))
    return np.array(out)


def np_bins(perp, f):
    if f == 1:
        return np.full(len(perp), 29)
    return np.clip(np.floor((perp - 1) / (f - 1) * 30).astype(int), 0, 29)


def make_stats(f, d):
    return st.LayerStatistics(f, d, lambda name, value: tf.Variable(value, trainable=False))


def read(stats):
    return {name: v.numpy() for name, v in stats.variables().items()}


def test_perplexity_matches_reference_and_edge_cases():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 7)).astype(np.float32)
    a[0] = [0, 0, 3, 0, 0, 0, 0]  # one filter: perplexity 1
    a[1] = 2.0  # all alike: perplexity F
    a[2] = 0.0  # none respond: perplexity F
    a[3] = -1.0  # clamped to zero: perplexity F
    clean, n_bad = st.clean_activations(tf.constant(a))
    got = st.perplexity(clean).numpy()
    np.testing.assert_allclose(got, np_perplexity(a), rtol=RTOL)
    # The recorder's TF op and the derived stages' NumPy function (which cannot share code: only
    # the recorder imports TensorFlow) are one definition.
    from deepeyes_keras.derive.embedding import perplexity_of

    np.testing.assert_allclose(got, perplexity_of(a), rtol=RTOL)
    assert got[0] == pytest.approx(1.0)
    assert got[1] == got[2] == got[3] == pytest.approx(7.0)
    assert int(n_bad) == 0


def test_histogram_bins_cover_one_to_f_with_f_in_last_bin():
    perp = tf.constant([1.0, 1.0001, 10.5, 19.99, 20.0], tf.float32)
    np.testing.assert_array_equal(st.histogram_bins(perp, 20).numpy(), np_bins(perp.numpy(), 20))
    assert st.histogram_bins(perp, 20).numpy()[-1] == 29
    assert st.histogram_bins(perp, 20).numpy()[0] == 0
    assert set(st.histogram_bins(tf.constant([1.0]), 1).numpy()) == {29}


def test_pairwise_abs_diff_sum_chunks_agree_with_reference(monkeypatch):
    rng = np.random.default_rng(1)
    a = rng.random((37, 9)).astype(np.float32)
    ref = np.abs(a[:, :, None] - a[:, None, :]).sum(0)
    np.testing.assert_allclose(st.pairwise_abs_diff_sum(tf.constant(a)).numpy(), ref, rtol=RTOL)
    monkeypatch.setattr(st, "_PAIRWISE_CHUNK_ELEMENTS", 81 * 4)  # chunks of 4 rows, padded
    np.testing.assert_allclose(st.pairwise_abs_diff_sum(tf.constant(a)).numpy(), ref, rtol=RTOL)


def test_running_statistics_match_numpy_over_several_updates():
    rng = np.random.default_rng(2)
    f, d = 6, 4
    stats = make_stats(f, d)
    batches = []
    for step in range(1, 6):
        a = rng.normal(size=(30, f)).astype(np.float32) * (step / 2)
        a[:, 5] = -1.0  # a dead filter
        labels = rng.integers(-1, d, size=30).astype(np.int32)  # -1: unlabelled
        stats.update(tf.constant(a), tf.constant(labels), tf.constant(step, tf.int64), weight=2.0)
        batches.append((step, np.maximum(a, 0), labels))
    out = st.finalize(read(stats), step=5)

    all_a = np.concatenate([b[1] for b in batches])
    all_l = np.concatenate([b[2] for b in batches])
    mu = all_a.max(0)
    np.testing.assert_allclose(out["max_activation"], mu, rtol=RTOL)

    # Frequency: each instance compared with the running max after its own update.
    above, running, last = np.zeros(f), np.zeros(f), np.full(f, -1)
    for _step, a, _ in batches:
        running = np.maximum(running, a.max(0))
        above += (a > st.BETA * running).sum(0)
    np.testing.assert_allclose(out["frequency"], above / len(all_a), rtol=RTOL)

    # Reliability: last step with an instance >= THETA * final max (and > 0).
    for step, a, _ in batches:
        hit = ((a >= st.THETA * mu) & (a > 0)).any(0)
        last = np.where(hit, step, last)
    np.testing.assert_array_equal(out["reliability_step"], last)
    assert out["reliability_step"][5] == -1 and out["reliability_age"][5] == 6

    # Weighted Jaccard: sum min / sum max (dead pairs reported 0).
    mins = np.minimum(all_a[:, :, None], all_a[:, None, :]).sum(0)
    maxs = np.maximum(all_a[:, :, None], all_a[:, None, :]).sum(0)
    ref = np.where(maxs > 0, mins / np.where(maxs > 0, maxs, 1), 0)
    np.testing.assert_allclose(out["jaccard"], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.diag(out["jaccard"])[:5], 1.0, rtol=1e-6)

    # Label sums over labelled instances only.
    ref_labels = np.stack([all_a[all_l == c].sum(0) for c in range(d)], axis=1)
    np.testing.assert_allclose(out["label_activation"], ref_labels, rtol=RTOL)

    # Histogram: weighted counts of perplexity bins.
    ref_hist = np.bincount(np_bins(np_perplexity(all_a), f), minlength=30) * 2.0
    np.testing.assert_allclose(out["histogram_cumulative"], ref_hist)
    raw = read(stats)
    assert int(raw["instances"]) == 150 and float(raw["weighted_instances"]) == 300.0


def test_nonfinite_activations_are_zeroed_and_counted():
    stats = make_stats(3, 2)
    a = np.array([[np.nan, 1.0, np.inf], [2.0, -np.inf, 0.5]], np.float32)
    stats.update(tf.constant(a), tf.constant([0, 1]), tf.constant(1, tf.int64))
    raw = read(stats)
    assert int(raw["nonfinite"]) == 3
    out = st.finalize(raw, step=1)
    np.testing.assert_allclose(out["max_activation"], [2.0, 1.0, 0.5])
    assert all(np.isfinite(v).all() for v in out.values())


def test_wide_layer_jaccard_uses_a_bounded_subset_consistently():
    f = 600
    m = 16
    n_used = st.jaccard_instances(m, f)
    assert n_used == st.JACCARD_MIN_INSTANCES < m
    rng = np.random.default_rng(3)
    a = rng.random((m, f)).astype(np.float32)
    a[:, 1] = a[:, 0]  # identical filters stay identical on the subset
    stats = make_stats(f, 2)
    stats.update(tf.constant(a), tf.zeros([m], tf.int32), tf.constant(1, tf.int64))
    out = st.finalize(read(stats), step=1)
    sub = a[:n_used]
    mins = np.minimum(sub[:, 0], sub[:, 2]).sum()
    maxs = np.maximum(sub[:, 0], sub[:, 2]).sum()
    assert out["jaccard"][0, 1] == pytest.approx(1.0)
    assert out["jaccard"][0, 2] == pytest.approx(mins / maxs, rel=1e-5)
    np.testing.assert_allclose(out["max_activation"], a.max(0), rtol=RTOL)  # all instances
