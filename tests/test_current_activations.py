"""Overlays of the current network: activations recomputed with each snapshot's weights.

Every snapshot's ``current_activation`` is checked against a NumPy reference, the layer applied
to the instance's input window with the weights the model had at that snapshot's step (kept by
a callback after DeepEyes'), and for the first layer against Keras' own convolution of the
stored input patch. Layers whose activations cannot be recomputed keep the sampled ones, and
their record (and view title) says why.
"""

import keras
import numpy as np
import pytest

from deepeyes_keras import DeepEyesCallback, load_run
from deepeyes_keras.record.current import CODE_LEVELS, decode, encode

pytestmark = pytest.mark.slow


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            keras.layers.Conv2D(6, 3, strides=2, activation="tanh", name="conv_b"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(5, activation="relu", name="fc"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ],
        name="current_net",
    )
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    return model


class _Weights(keras.callbacks.Callback):
    """The weights of every layer after each step (what DeepEyes' snapshot at that step saw)."""

    def __init__(self):
        super().__init__()
        self.at = {}

    def on_train_batch_end(self, batch, logs=None):
        self.at[len(self.at) + 1] = {
            layer.name: [w.numpy() for w in layer.weights] for layer in self.model.layers
        }


def _reference(kind, descriptor, weights, activation):
    kernel, bias = weights
    z = descriptor.astype(np.float64) @ kernel.reshape(-1, kernel.shape[-1]) + bias
    if activation == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return {"relu": np.maximum(z, 0), "tanh": np.tanh(z)}[activation]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.random((96, 8, 8, 1)).astype("float32")
    x[:, :3] = 0.0  # a blank band: identical windows
    y = rng.integers(0, 3, 96)
    model, weights = _model(), _Weights()
    cb = DeepEyesCallback(log_dir=tmp_path_factory.mktemp("runs"), run_name="run", verbose=0,
                          maps=False, snapshot_every=4, sample_every=1, images_per_step=4,
                          positions_per_image=3, reservoir_size=40)  # fmt: skip
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb, weights])
    return load_run(cb.run_dir), weights.at, model


ACTIVATIONS = {"conv": "relu", "conv_b": "tanh", "fc": "relu", "out": "softmax"}


def test_current_activations_follow_each_snapshots_weights(recorded):
    run, weights_at, _ = recorded
    assert len(run.snapshots) >= 3
    checked = 0
    for snap in run.snapshots:
        for name, activation in ACTIVATIONS.items():
            layer = snap.layers[name]
            assert layer.overlay_note is None
            current = layer.current_activation
            samples = layer.samples
            assert current.shape == (len(layer.reservoir_uids), layer.info["n_filters"])
            order = {u: i for i, u in enumerate(samples.uid.tolist())}
            rows = [order[u] for u in layer.reservoir_uids.tolist()]
            ref = _reference(name, samples.descriptor[rows], weights_at[snap.step][name],
                             activation)  # fmt: skip
            ref = np.maximum(ref, 0.0)  # stored clamped at 0, as the overlays draw them
            # Codes per filter (half a step), and float16 descriptors (relative 1e-3).
            step = ref.max(axis=0, initial=0) / CODE_LEVELS
            assert np.all(np.abs(current - ref) <= 0.51 * step + 3e-3 * np.abs(ref).max() + 1e-6)
            checked += 1
    assert checked == 4 * len(run.snapshots)


def test_sampled_activations_differ_from_current_ones(recorded):
    """The point of recomputing: the network changed since older instances were sampled."""
    run, _, _ = recorded
    layer = run.snapshots[-1].layers["conv"]
    samples = layer.samples
    order = {u: i for i, u in enumerate(samples.uid.tolist())}
    rows = np.array([order[u] for u in layer.reservoir_uids.tolist()])
    old = samples.step[rows] < run.snapshots[-1].step - 4
    assert old.any()
    sampled = np.maximum(samples.activation[rows][old], 0)
    assert np.abs(sampled - layer.current_activation[old]).max() > 0.01


def test_first_layer_matches_keras_on_the_stored_patch(recorded):
    """conv1's patch is its input window: Keras' own conv of it gives the stored activation."""
    run, _, model = recorded
    last = run.snapshots[-1]
    assert last.step == max(s.step for s in run.snapshots)
    layer = last.layers["conv"]
    samples = layer.samples
    order = {u: i for i, u in enumerate(samples.uid.tolist())}
    rows = [order[u] for u in layer.reservoir_uids.tolist()]
    patch = samples.patch[rows].astype(np.float32)  # (n, 3, 3, 1) at the border: zero padded
    inside = (samples.box_start[rows] >= 0).all(axis=1) & (
        samples.box_start[rows] + samples.box_size[rows] <= 8
    ).all(axis=1)
    conv = model.get_layer("conv")
    kernel, bias = (w.numpy() for w in conv.weights)
    keras_out = keras.ops.convert_to_numpy(
        keras.ops.relu(keras.ops.conv(patch[inside], kernel, padding="valid") + bias)
    )[:, 0, 0, :]
    # Half a code step of the stored scale (each filter's largest over the whole reservoir).
    stored = layer.snapshot.array(f"{layer.key}.current_scale").astype(np.float32)
    assert np.all(stored >= keras_out.max(axis=0, initial=0) * (1 - 1e-3) - 1e-6)
    scale = stored / CODE_LEVELS
    assert inside.sum() >= 5
    assert np.all(np.abs(layer.current_activation[inside] - keras_out) <= 0.51 * scale + 1e-3)


def test_hashed_descriptors_keep_sampled_activations(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.Conv2D(120, 1, name="wide"),
        keras.layers.Conv2D(2, 3, name="hashed"),  # 3 x 3 x 120 = 1,080 values: hashed
        keras.layers.Flatten(), keras.layers.Dense(2, name="head"),
    ])  # fmt: skip
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(1).random((16, 6, 6, 1)).astype("float32")
    cb = DeepEyesCallback(log_dir=tmp_path, run_name="run", verbose=0, maps=False,
                          snapshot_every=2, sample_every=1, reservoir_size=20,
                          layers=["wide", "hashed"])  # fmt: skip
    model.fit(x, np.zeros(16, int), batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    snap = load_run(cb.run_dir).snapshots[-1]
    hashed = snap.layers["hashed"]
    assert hashed.current_activation is None
    assert "hashed" in hashed.overlay_note
    assert snap.record["layers"]["hashed"]["overlay_activations"] == "sampled"
    assert snap.layers["wide"].current_activation is not None


def test_codes_round_trip_within_half_a_step():
    a = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)
    a[:, 3] = -1.0  # a filter below 0 everywhere
    codes, scale = encode(a)
    assert codes.dtype == np.uint8 and scale.shape == (7,)
    back = decode(codes, scale)
    clamped = np.maximum(a, 0)
    assert np.all(np.abs(back - clamped) <= scale / (2 * CODE_LEVELS) + 1e-7)
    assert np.all(back[:, 3] == 0)


def test_jaccard_is_stored_as_codes_of_its_upper_triangle(recorded):
    run, _, _ = recorded
    snap = run.snapshots[-1]
    layer = snap.layers["fc"]
    with np.load(run.path / snap.record["arrays"]) as data:
        stored = data[f"{layer.key}.jaccard"]
    f = layer.info["n_filters"]
    assert stored.dtype == np.uint16 and stored.shape == (f * (f + 1) // 2,)
    assert layer.record["jaccard_codes"] == 60_000
    full = layer.jaccard
    assert full.shape == (f, f) and full.dtype == np.float64
    np.testing.assert_array_equal(full, full.T)
    np.testing.assert_array_equal(full[np.triu_indices(f)], stored / 60_000)
    assert np.all(np.diag(full)[layer.max_activation > 0] >= 1 - 1 / 60_000)


def test_current_codes_are_the_views_levels(recorded):
    """The overlays draw 16 levels (charts.layer_data): the stored codes are exactly those."""
    from deepeyes_keras.charts.layer_data import CODE_TOP

    run, _, _ = recorded
    layer = run.snapshots[-1].layers["fc"]
    assert CODE_LEVELS == CODE_TOP == layer.record["current_levels"] == 15
    with np.load(run.path / run.snapshots[-1].record["arrays"]) as data:
        codes = data[f"{layer.key}.current_activation"]
    assert codes.dtype == np.uint8 and codes.max() <= CODE_LEVELS
    current = layer.current_activation
    top = current.max(axis=0)
    share = current / np.where(top > 0, top, 1.0)
    np.testing.assert_array_equal(np.rint(CODE_TOP * share), codes)  # what the views draw
