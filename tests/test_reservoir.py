"""Reservoir sampling inside the graph: bounded, unique, uniform, seeded."""

import numpy as np
import tensorflow as tf

from deepeyes_keras.record.reservoir import Reservoir


def make(capacity, seed=0):
    return Reservoir(
        capacity,
        {"descriptor": (2,)},
        lambda name, value: tf.Variable(value, trainable=False),
        lambda var, idx, upd: var.scatter_nd_update(idx, upd),
        seed=seed,
    )


def offer(res, step, m, start):
    ids = np.arange(start, start + m)
    res.update(
        tf.constant(step, tf.int64),
        {
            "image": tf.constant(ids),
            "position": tf.zeros([m], tf.int32),
            "label": tf.constant(ids % 10, tf.int32),
            "descriptor": tf.constant(np.stack([ids, -ids], 1), tf.float32),
        },
    )


def contents(res):
    uid = res.columns["uid"].numpy()[: res.capacity]
    return (
        uid,
        res.columns["descriptor"].numpy()[: res.capacity],
        res.columns["image"].numpy()[: res.capacity],
    )


def test_fills_in_order_then_keeps_capacity_with_consistent_rows():
    res = make(25)
    offer(res, 1, 10, 0)
    uid, desc, image = contents(res)
    np.testing.assert_array_equal(uid[:10], np.arange(10))
    assert (uid[10:] == -1).all()
    for step in range(2, 40):
        offer(res, step, 10, (step - 1) * 10)
    uid, desc, image = contents(res)
    assert int(res.seen.numpy()) == 390
    assert (uid >= 0).all() and len(set(uid)) == 25  # full, no duplicates
    # Every column of a row belongs to the same candidate (uid t was image t in this test).
    np.testing.assert_array_equal(image, uid)
    np.testing.assert_array_equal(desc[:, 0], uid)
    np.testing.assert_array_equal(desc[:, 1], -uid)


def test_inclusion_is_uniform_over_the_stream():
    # Algorithm R keeps each of N candidates with probability capacity / N.
    capacity, per_step, steps, trials = 20, 8, 25, 120
    n = per_step * steps
    counts = np.zeros(n)
    for trial in range(trials):
        res = make(capacity, seed=trial)
        for step in range(1, steps + 1):
            offer(res, step, per_step, (step - 1) * per_step)
        uid, _, _ = contents(res)
        counts[uid] += 1
    expected = trials * capacity / n  # 12 per candidate
    early, late = counts[: n // 2].mean(), counts[n // 2 :].mean()
    assert abs(early - expected) < 0.15 * expected
    assert abs(late - expected) < 0.15 * expected
    assert counts.sum() == trials * capacity


def test_same_seed_same_sample_different_seed_different_sample():
    def run(seed):
        res = make(10, seed=seed)
        for step in range(1, 20):
            offer(res, step, 6, (step - 1) * 6)
        return contents(res)[0]

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))
