"""T5 necessity on constructed activations with known answers: pooling, probes, the depth rule."""

import numpy as np
import pytest

from deepeyes_keras.derive import probes as pr

# --- pooling -------------------------------------------------------------------------------


def test_pool_by_image_matches_a_loop():
    rng = np.random.default_rng(9)
    image = rng.integers(100, 130, 400)
    label = (image % 3).copy()
    x = rng.normal(size=(400, 7))
    x[5] = np.nan
    mixed = np.flatnonzero(image == 111)
    assert len(mixed) > 2 and 5 not in mixed[-2:]
    label[mixed[-1]] = 2  # its positions disagree: the image's label is unknown
    got = pr.pool_by_image(x, image, label)
    keep = np.isfinite(x).all(axis=1)
    ids = sorted(set(image[keep].tolist()))
    assert got.image.tolist() == ids
    for row, i in enumerate(ids):
        mine = keep & (image == i)
        np.testing.assert_allclose(got.features[row], x[mine].mean(axis=0), rtol=1e-12)
        assert got.count[row] == mine.sum()
        labels = set(label[mine].tolist())
        assert got.labels[row] == (labels.pop() if len(labels) == 1 else -1)
    assert got.labels[ids.index(111)] == -1


def test_pool_by_image_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="image"):
        pr.pool_by_image(np.ones((4, 2)), [1, 2, 3], [0, 0, 0, 0])


# --- probes --------------------------------------------------------------------------------


def clusters(n_per: int, classes: int, f: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, f)) * 4
    y = np.repeat(np.arange(classes), n_per)
    return centres[y] + spread * rng.normal(size=(len(y), f)), y


def test_probe_on_separable_clusters_is_near_one():
    x, y = clusters(100, 4, 20, 1.0, seed=10)
    p = pr.probe(x, y, seed=0)
    assert p.linear >= 0.98 and p.knn >= 0.98
    assert p.chance == pytest.approx(0.25) and p.instances == 400 and p.reason is None


def test_probe_on_random_labels_is_near_chance():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(400, 20))
    y = rng.integers(0, 4, 400)
    p = pr.probe(x, y, seed=0)
    assert p.linear <= p.chance + 0.08 and p.knn <= p.chance + 0.08
    assert p.linear >= 0.1 and p.knn >= 0.1


def test_probe_ignores_unknown_labels_and_rare_classes():
    x, y = clusters(30, 3, 5, 0.5, seed=12)
    y = y.copy()
    y[:10] = -1
    y[-2:] = 7  # a label seen twice: left out, listed
    p = pr.probe(x, y, folds=5)
    assert p.instances == 90 - 10 - 2 and p.rare_classes == [7] and p.classes == 3
    assert p.linear is not None and p.linear > 0.9


def test_probe_with_too_few_instances_says_why():
    p = pr.probe(np.ones((6, 3)), [0, 0, 0, 1, 1, -1], folds=5)
    assert p.linear is None and p.knn is None and "fewer than 2 labels" in p.reason
    assert p.rare_classes == [0, 1]
    with pytest.raises(ValueError, match="folds=1"):
        pr.probe(np.ones((6, 3)), [0] * 6, folds=1)


def test_probe_on_pooled_conv_positions_separates_images():
    # Positions of an image carry its label plus position noise; pooling recovers separability.
    rng = np.random.default_rng(13)
    images = np.repeat(np.arange(120), 10)
    y_image = np.arange(120) % 3
    centres = rng.normal(size=(3, 8)) * 2
    x = centres[y_image[images]] + 2.0 * rng.normal(size=(1200, 8))
    pooled = pr.pool_by_image(x, images, y_image[images])
    p = pr.probe(pooled.features, pooled.labels)
    assert pooled.features.shape == (120, 8) and p.linear >= 0.95


# --- necessity -----------------------------------------------------------------------------


def test_layer_without_gain_is_removable_and_saturation_is_found():
    n = pr.necessity(
        [("conv1", 0.80), ("conv2", 0.90), ("fc1", 0.903), ("fc2", 0.95), ("out", 0.95)]
    )
    gains = [layer.gain for layer in n.layers]
    assert gains[0] is None
    np.testing.assert_allclose(gains[1:], [0.10, 0.003, 0.047, 0.0], atol=1e-12)
    assert [layer.removable for layer in n.layers] == [False, False, True, False, False]
    assert n.saturated_at == "fc2" and n.best == pytest.approx(0.95)
    assert not any(layer.after_saturation for layer in n.layers)  # fc2 is the last hidden one
    assert not n.needs_capacity
    assert any(r.startswith("fc1 gains +0.003") for r in n.reasons)


def test_layers_after_saturation_are_candidates():
    # fc4 gains over its dip at fc3, but separability already saturated at fc2.
    n = pr.necessity([("fc1", 0.90), ("fc2", 0.985), ("fc3", 0.97), ("fc4", 0.99), ("out", 0.99)])
    assert n.saturated_at == "fc2"
    assert [layer.after_saturation for layer in n.layers] == [False, False, True, True, False]
    assert [layer.removable for layer in n.layers] == [False, False, True, False, False]
    assert any("saturated at fc2: fc4 may be removable" in r for r in n.reasons)


def test_low_last_hidden_layer_needs_capacity():
    gap = pr.necessity([("fc1", 0.60), ("fc2", 0.70), ("out", 0.95)])
    assert gap.needs_capacity and any("capacity" in r for r in gap.reasons)
    low = pr.necessity([("fc1", 0.70), ("fc2", 0.80), ("out", 0.82)])
    assert low.needs_capacity  # below the absolute level
    t = pr.NecessityThresholds(capacity_accuracy=None)
    assert not pr.necessity(
        [("fc1", 0.70), ("fc2", 0.80), ("out", 0.82)], thresholds=t
    ).needs_capacity


def test_necessity_reads_probe_results_and_unknowns():
    a = pr.ProbeResult(0.9, 0.7, 0.1, 500, 10, 5, [])
    b = pr.ProbeResult(0.905, 0.95, 0.1, 500, 10, 5, [])
    out = pr.ProbeResult(0.96, 0.96, 0.1, 500, 10, 5, [])
    linear = pr.necessity([("fc1", a), ("fc2", b), ("out", out)])
    knn = pr.necessity([("fc1", a), ("fc2", b), ("out", out)], metric="knn")
    assert linear.layers[1].removable and not knn.layers[1].removable
    unknown = pr.necessity([("fc1", None), ("fc2", 0.9), ("out", 0.95)])
    assert unknown.layers[1].gain is None and not unknown.layers[1].removable
    assert pr.necessity([("out", 0.9)]).needs_capacity is False
    with pytest.raises(ValueError, match="metric='cka'"):
        pr.necessity([("out", 0.9)], metric="cka")


def test_probe_of_a_wide_layer_on_few_instances_projects_within_the_fold():
    # 50 instances of 300 features: each training fold has 40, fewer than PROBE_DIMENSIONS.
    rng = np.random.default_rng(21)
    y = np.repeat([0, 1], 25)
    x = rng.normal(size=(50, 300)) + 3.0 * y[:, None]
    result = pr.probe(x, y)
    assert result.linear is not None and result.linear > 0.9


# --- what a layer adds to its input ----------------------------------------------------------


def test_input_probe_enters_the_depth_sequence_before_its_layer():
    n = pr.necessity([("conv4", 0.70), ("fc1", 0.955), ("out", 0.96)], inputs={"fc1": 0.95})
    fc1 = n.layers[1]
    assert fc1.input_accuracy == pytest.approx(0.95)
    assert fc1.input_gain == pytest.approx(0.005) and fc1.gain == pytest.approx(0.255)
    assert fc1.removable  # judged on its input gain, not on the pooled conv4 probe
    assert n.saturated_at == pr.input_entry("fc1") == "fc1 (input)"
    assert fc1.after_saturation  # its own input already saturates
    assert any(r.startswith("fc1 gains +0.005 over its input") for r in n.reasons)
    # A dense layer that adds separability to its input is kept.
    kept = pr.necessity([("conv4", 0.70), ("fc1", 0.95), ("out", 0.955)], inputs={"fc1": 0.80})
    assert kept.layers[1].input_gain == pytest.approx(0.15)
    assert not kept.layers[1].removable and not kept.layers[1].after_saturation
    assert kept.saturated_at == "fc1"
    # Without inputs the rule is the gain over the layer before, as it always was.
    plain = pr.necessity([("conv4", 0.70), ("fc1", 0.955), ("out", 0.96)])
    assert plain.layers[1].input_gain is None and not plain.layers[1].removable


def test_input_probes_must_name_layers():
    with pytest.raises(ValueError, match=r"input probes of \['fc9'\]"):
        pr.necessity([("fc1", 0.9), ("out", 0.95)], inputs={"fc9": 0.9})


def _two_rings(rng, n):
    """Labels by radius: not linearly separable in the plane, separable after a ReLU layer."""
    y = np.repeat([0, 1], n // 2)
    radius = np.where(y == 0, 1.0, 3.0) + 0.2 * rng.normal(size=n)
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1), y


def test_ground_truth_a_layer_that_only_mixes_its_input_is_flagged_one_that_separates_is_not():
    rng = np.random.default_rng(4)
    # (a) Linearly separable input; the layer is an invertible linear map of it: adds nothing.
    y = np.repeat([0, 1], 300)
    given = rng.normal(size=(600, 20)) + 1.5 * y[:, None] * (np.arange(20) < 3)
    mixed = given @ rng.normal(size=(20, 20))
    a_in, a_out = pr.probe(given, y), pr.probe(mixed, y)
    a = pr.necessity([("conv", 0.6), ("fc1", a_out), ("out", a_out)], inputs={"fc1": a_in})
    assert abs(a.layers[1].input_gain) < 0.01 and a.layers[1].removable
    # (b) Two rings: a linear probe of the input is near chance; the layer's ReLU features
    # (|x|-like responses along many directions) make the radius linear: it adds separability.
    rings, y = _two_rings(rng, 600)
    w = rng.normal(size=(2, 64))
    features = np.maximum(rings @ w, 0) + np.maximum(-rings @ w, 0)
    b_in, b_out = pr.probe(rings, y), pr.probe(features, y)
    assert b_in.linear < 0.7 and b_out.linear > 0.95
    b = pr.necessity([("conv", 0.6), ("fc1", b_out), ("out", b_out)], inputs={"fc1": b_in})
    assert b.layers[1].input_gain > 0.25 and not b.layers[1].removable
    assert not b.layers[1].after_saturation


def test_input_probe_keeps_the_most_recent_rows():
    rng = np.random.default_rng(2)
    y = np.arange(800) % 2
    x = rng.normal(size=(800, 5))
    x[-300:] += 4 * y[-300:, None]  # only the recent rows separate the labels
    got = pr.input_probe(x, y, max_instances=300)
    assert got["input_instances"] == 300 and got["input_accuracy"] > 0.95
    ref = pr.probe(x[-300:], y[-300:])
    assert got["input_accuracy"] == round(ref.linear, 4) and got["input_knn"] == round(ref.knn, 4)
    assert pr.input_probe(x, y, max_instances=800)["input_accuracy"] < 0.85


def test_covariance_pca_gives_the_probe_sklearn_gives(monkeypatch):
    """The exact covariance PCA (the fast path) and sklearn's own choice agree on the probe."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 600)
    x = rng.normal(size=(600, 120)) @ rng.normal(size=(120, 120)) + 0.8 * np.eye(4)[y] @ (
        rng.normal(size=(4, 120))
    )
    fast = pr.probe(x, y)
    monkeypatch.setattr(pr, "COVARIANCE_PCA_MAX", 0)  # never the covariance path
    reference = pr.probe(x, y)
    assert 0.3 < reference.linear < 0.99  # neither trivial nor hopeless
    assert fast.linear == pytest.approx(reference.linear, abs=0.01)
    assert fast.knn == reference.knn
