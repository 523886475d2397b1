"""The networks users train: backbones inside models, several inputs, recurrent layers, budgets.

Each case is trained with a learning rate of 0 where the recorded numbers are checked, so the
weights built here are the ones recorded: a recorded activation must be the layer's own function
of the recorded neuronal receptive field, and filters built dead, always on or identical must be
reported as such, also inside a nested backbone.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from deepeyes_keras import DeepEyesCallback, load_run
from deepeyes_keras.derive.findings import write_findings
from deepeyes_keras.record.budget import choose_within_budget, spread_order, tap_bytes
from deepeyes_keras.record.taps import DESCRIPTOR_DIM, hash_projection

pytestmark = pytest.mark.slow
L = keras.layers


def frozen(model):
    model.compile(
        keras.optimizers.SGD(learning_rate=0.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def record(model, x, y, tmp_path, name, **kwargs):
    epochs = kwargs.pop("epochs", 4)
    cb = DeepEyesCallback(log_dir=str(tmp_path), run_name=name, maps=False, verbose=0, **kwargs)
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=[cb])
    write_findings(cb.run_dir)
    return load_run(cb.run_dir)


# -- a backbone inside a model -------------------------------------------------------------------


def backbone_model():
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((10, 10, 3))
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="stem")(inner_in)
    h = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(h)
    inner_block = keras.Model(inner_in, h, name="block")
    backbone_in = keras.Input((10, 10, 3))
    g = inner_block(backbone_in)  # nested twice: model -> backbone -> block
    g = L.Conv2D(5, 1, activation="relu", name="expand")(g)
    backbone = keras.Model(backbone_in, g, name="backbone")
    inputs = keras.Input((10, 10, 3))
    z = backbone(inputs)
    z = L.GlobalAveragePooling2D(name="gap")(z)
    z = L.Dense(3, name="head")(z)
    model = keras.Model(inputs, z, name="finetune")
    dw = model.get_layer("backbone").get_layer("block").get_layer("dw")
    stem = model.get_layer("backbone").get_layer("block").get_layer("stem")
    k, b = stem.get_weights()
    k[..., 1], b[1] = k[..., 0], b[0]  # stem channels 0 and 1 identical ...
    stem.set_weights([k, b])
    k, b = dw.get_weights()
    k[..., 1, 0], b[1] = k[..., 0, 0], b[0]  # ... through the same kernel: a duplicate pair
    k[..., 2, 0], b[2] = 0.0, -1.0  # dead
    k[..., 3, 0], b[3] = 0.0, 5.0  # always on
    dw.set_weights([k, b])
    return frozen(model)


@pytest.fixture(scope="module")
def nested_run(tmp_path_factory):
    model = backbone_model()
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 10, 10, 3)).astype("float32"), rng.integers(0, 3, 64)
    return model, record(model, x, y, tmp_path_factory.mktemp("nested"), "nested")


def test_layers_inside_nested_models_are_recorded_by_path(nested_run):
    _, run = nested_run
    assert run.layer_names == [
        "backbone/block/stem",
        "backbone/block/dw",
        "backbone/expand",
        "head",
    ]
    info = {i["name"]: i for i in run.manifest["analysed_layers"]}
    assert info["backbone/block/dw"]["space_map"][0] == {"scale": 1, "offset": -2, "size": 5}
    entries = {e["name"]: e for e in run.manifest["model"]["layers"]}
    assert entries["backbone"]["analysed"] and entries["head"]["analysed"]


def test_nested_ground_truth_dead_always_on_duplicate(nested_run):
    model, run = nested_run
    snap = run.snapshots[-1]
    dw = snap.findings["layers"]["backbone/block/dw"]
    assert dw["T2"]["dead"] == [2] and dw["T2"]["always_on"] == [3]
    assert [0, 1] in dw["T4"]["redundant_groups"]
    # The tap reached the nested layer itself: its activations are its function of the window.
    samples = snap.layers["backbone/block/dw"].samples
    kernel, bias = model.get_layer("backbone").get_layer("block").get_layer("dw").get_weights()
    windows = samples.descriptor.astype(np.float64).reshape(-1, 3, 3, 6)
    expected = np.maximum(np.einsum("nijc,ijc->nc", windows, kernel[..., 0]) + bias, 0)
    np.testing.assert_allclose(samples.activation, expected, atol=2e-2)


def test_nested_names_by_argument_with_close_match_hints(tmp_path):
    model = backbone_model()
    cb = DeepEyesCallback(log_dir=str(tmp_path), layers=["backbone/block/dww"], verbose=0)
    with pytest.raises(ValueError, match=r"backbone/block/dw"):
        cb.set_model(model)
    cb = DeepEyesCallback(log_dir=str(tmp_path), layers=["backbone"], verbose=0)
    with pytest.raises(ValueError, match=r"nested model: name its layers as 'backbone/<layer>'"):
        cb.set_model(model)


def test_a_nested_layer_is_never_resized(nested_run):
    from deepeyes_keras.redesign.proposal import proposal_from_findings

    _, run = nested_run
    findings = dict(run.snapshots[-1].findings, suggested_widths={"backbone/expand": 2})
    for f in findings["layers"].values():
        f["T1"]["stable"] = True
    proposal = proposal_from_findings(run.name, findings, run.manifest)
    assert "backbone/expand" not in proposal.widths
    assert "inside a nested model" in proposal.reasons["backbone/expand"]


# -- several inputs -------------------------------------------------------------------------------


def two_input_model():
    keras.utils.set_random_seed(1)
    image = keras.Input((8, 8, 1), name="image")
    meta = keras.Input((4,), name="meta")
    a = L.Conv2D(4, 3, activation="relu", name="conv")(image)
    a = L.GlobalAveragePooling2D(name="gap")(a)
    b = L.Dense(5, activation="relu", name="meta_fc")(meta)
    z = L.Concatenate(name="join")([a, b])
    z = L.Dense(3, name="head")(z)
    return frozen(keras.Model([image, meta], z, name="two_inputs"))


@pytest.mark.parametrize("as_dict", [False, True])
def test_several_inputs_each_layer_knows_its_inputs(tmp_path, as_dict):
    model = two_input_model()
    rng = np.random.default_rng(0)
    xi, xm = rng.random((48, 8, 8, 1)).astype("float32"), rng.random((48, 4)).astype("float32")
    x = {"image": xi, "meta": xm} if as_dict else [xi, xm]
    run = record(model, x, rng.integers(0, 3, 48), tmp_path, "two")
    info = {i["name"]: i for i in run.manifest["analysed_layers"]}
    assert info["conv"]["inputs"] == ["image"] and info["conv"]["patch_input"] == "image"
    assert info["conv"]["patch_shape"] == [3, 3, 1]
    assert info["meta_fc"]["inputs"] == ["meta"] and info["meta_fc"]["patch_shape"] == [4]
    assert info["head"]["inputs"] == ["image", "meta"] and info["head"]["patch_input"] == "image"
    assert [i["name"] for i in run.manifest["model"]["inputs"]] == ["image", "meta"]
    # meta_fc's instances are the metadata vectors: its activations are relu(x W + b) of them,
    # and its patch is the vector itself; the conv's patch is the image box of its position.
    snap = run.snapshots[-1]
    s = snap.layers["meta_fc"].samples
    w, bias = model.get_layer("meta_fc").get_weights()
    np.testing.assert_allclose(s.activation, np.maximum(s.descriptor @ w + bias, 0), atol=2e-2)
    np.testing.assert_allclose(s.patch, s.descriptor, atol=1e-3)
    c = snap.layers["conv"].samples
    np.testing.assert_allclose(c.patch.reshape(len(c.patch), -1), c.descriptor, atol=1e-3)
    assert np.isfinite(snap.layers["head"].samples.activation).all()


# -- recurrent layers ----------------------------------------------------------------------------


def recurrent_model():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6, 3))
    h = L.LSTM(5, return_sequences=True, name="lstm")(inputs)
    h = L.Bidirectional(L.SimpleRNN(3, return_sequences=True), name="birnn")(h)
    h = L.GRU(4, name="gru")(h)
    z = L.Dense(3, name="head")(h)
    return frozen(keras.Model(inputs, z, name="recurrent"))


@pytest.fixture(scope="module")
def recurrent_run(tmp_path_factory):
    model = recurrent_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6, 3)).astype("float32")
    return model, record(model, x, rng.integers(0, 3, 48), tmp_path_factory.mktemp("rnn"), "rnn")


def test_recurrent_layers_are_recorded_with_their_definition(recurrent_run):
    _, run = recurrent_run
    info = {i["name"]: i for i in run.manifest["analysed_layers"]}
    assert run.layer_names == ["lstm", "birnn", "gru", "head"]
    assert info["lstm"]["kind"] == "recurrent" and info["lstm"]["grid"] == [6]
    assert info["lstm"]["descriptor_size"] == 3 + 5  # the input step and the previous output
    assert info["birnn"]["descriptor_size"] == 5 + 2 * 6  # and both neighbouring outputs
    assert info["gru"]["grid"] == [] and info["gru"]["descriptor_size"] == 6 * 6
    assert info["lstm"]["patch_shape"] == [6, 3]  # the whole input sequence


def test_lstm_instances_are_time_steps_with_input_and_state(recurrent_run):
    model, run = recurrent_run
    s = run.snapshots[-1].layers["lstm"].samples
    sequences = s.patch.astype(np.float32)  # each instance's whole input sequence
    outputs = keras.Model(model.inputs, model.get_layer("lstm").output)([sequences]).numpy()
    rows = np.arange(len(s.position))
    t = s.position
    np.testing.assert_allclose(s.descriptor[:, :3], sequences[rows, t], atol=2e-3)
    previous = np.where((t > 0)[:, None], outputs[rows, np.maximum(t - 1, 0)], 0.0)
    np.testing.assert_allclose(s.descriptor[:, 3:], previous, atol=2e-3)
    np.testing.assert_allclose(s.activation, outputs[rows, t], atol=2e-3)  # float16 patches


def test_recurrent_statistics_are_finite(recurrent_run):
    _, run = recurrent_run
    snap = run.snapshots[-1]
    for name in run.layer_names:
        layer = snap.layers[name]
        assert np.isfinite(layer.max_activation).all() and layer.instances > 0


# -- big networks: the memory budget ------------------------------------------------------------


def test_spread_order_prefixes_cover_the_depth():
    assert spread_order(1) == [0]
    assert spread_order(9)[:5] == [0, 8, 4, 2, 6]
    assert sorted(spread_order(30)) == list(range(30))


class FakeTap:
    def __init__(self, name, n_filters, descriptor_size=100, patch=(5, 5, 1)):
        self.name, self.n_filters, self.descriptor_size = name, n_filters, descriptor_size
        self._patch = patch

    def patch_shape(self):
        return self._patch


def test_budget_keeps_layers_spread_and_within_bound():
    taps = [FakeTap(f"c{i}", 64 * (1 + i % 4)) for i in range(40)]
    kept, left = choose_within_budget(taps, reservoir_size=2000, n_labels=10, memory_budget_mb=40)
    assert 0 < len(kept) <= 24 and len(kept) + len(left) == 40
    assert sum(tap_bytes(t, reservoir_size=2000, n_labels=10) for t in kept) <= 40 * 2**20
    names = [t.name for t in kept]
    assert names[0] == "c0" and names[-1] == "c39"  # first and last are the first ones kept
    assert "c19" in names  # then the middle
    everything, _ = choose_within_budget(
        taps, reservoir_size=2000, n_labels=10, memory_budget_mb=None, max_layers=None
    )
    assert len(everything) == 40


def test_deep_network_default_is_bounded_and_every_layer_reachable(tmp_path):
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((8, 8, 1))]
        + [L.Conv2D(8, 3, padding="same", activation="relu", name=f"c{i}") for i in range(30)]
        + [L.Flatten(), L.Dense(3, name="head")]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 32)
    cb = DeepEyesCallback(log_dir=str(tmp_path), run_name="deep", maps=False, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    run = load_run(cb.run_dir)
    assert len(run.layer_names) == 24 and run.layer_names[0] == "c0"
    assert run.layer_names[-1] == "head"
    assert any("Left out" in str(w.message) for w in caught)
    assert run.manifest["model"]["recorder_bytes"] <= 256 * 2**20
    assert len(run.manifest["model"]["left_out_by_budget"]) == 7
    cb = DeepEyesCallback(log_dir=str(tmp_path), run_name="one", layers=["c17"], maps=False)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    assert load_run(cb.run_dir).layer_names == ["c17"]


def test_long_descriptors_are_hashed_keeping_neighbourhoods():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    raw = 4608  # a 3x3 window of 512 channels
    # ReLU windows of a layer whose features span a 30-dimensional subspace, plus noise.
    x = np.maximum(rng.normal(size=(1000, 30)) @ rng.normal(size=(30, raw)), 0)
    x += 0.3 * rng.normal(size=x.shape)
    bucket, sign = hash_projection(raw, DESCRIPTOR_DIM, seed=5)
    y = np.zeros((len(x), DESCRIPTOR_DIM))
    np.add.at(y.T, bucket, (x * sign).T)

    def knn(a, k=10):
        sq = (a * a).sum(1)
        d = sq[:, None] + sq[None] - 2 * a @ a.T
        np.fill_diagonal(d, np.inf)
        return np.argsort(d, axis=1)[:, :k]

    def kept(a, b):
        return np.mean([len(set(p) & set(q)) / 10 for p, q in zip(knn(a), knn(b), strict=True)])

    hashed = kept(x, y)
    # The maps reduce descriptors to 50 principal components anyway: hashing may cost about as
    # much of the 10 nearest neighbours as that step, not more.
    pca = kept(x, PCA(50, random_state=0).fit_transform(x))
    assert hashed >= 0.75 and hashed >= pca - 0.1, (hashed, pca)
    ratio = np.linalg.norm(y, axis=1) / np.linalg.norm(x, axis=1)
    assert abs(ratio.mean() - 1) < 0.05


def test_an_input_of_unknown_size_gets_a_clear_error(tmp_path):
    backbone = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35)
    model = keras.Sequential([backbone, L.GlobalAveragePooling2D(), L.Dense(3, name="head")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = DeepEyesCallback(log_dir=str(tmp_path), run_name="unknown", maps=False, verbose=0)
    x = np.random.default_rng(0).random((8, 32, 32, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"unknown dimension.*Give keras.Input a full shape"):
        model.fit(x, np.zeros(8), epochs=1, verbose=0, callbacks=[cb])


# -- the viewer shows them ----------------------------------------------------------------------


def test_viewer_has_pages_for_nested_depthwise_and_recurrent_layers(
    nested_run, recurrent_run, tmp_path, write_site, build_site
):
    import shutil

    from deepeyes_keras.derive.pipeline import update_run

    runs = tmp_path / "runs"
    for _, run in (nested_run, recurrent_run):
        shutil.copytree(run.path, runs / run.path.name)
        update_run(runs / run.path.name)
    site = build_site(write_site(tmp_path / "site", runs))
    # pages named by layer (a nested path's "/" becomes "-"); the old L<i> URLs redirect
    # (the run's own view files keep their L<i> keys)
    pairs = (
        ("nested", "backbone/block/dw", "backbone-block-dw", "L1"),
        ("rnn", "lstm", "lstm", "L0"),
    )
    for run_name, layer, slug, key in pairs:
        page = (site / "deepeyes" / run_name / slug / "index.html").read_text()
        assert f"<h1>{layer}" in page or f">{layer}<" in page, page[:2000]
        spec = runs / run_name / "views"
        assert any(spec.rglob(f"{key}.vl.json*"))


@pytest.mark.parametrize(
    "name, extra",
    [("MobileNetV2", {"alpha": 0.35}), ("ResNet50", {}), ("EfficientNetB0", {})],
)
def test_keras_applications_backbone_fine_tuned_at_defaults(tmp_path, name, extra):
    keras.utils.set_random_seed(0)
    backbone = getattr(keras.applications, name)(
        weights=None, include_top=False, input_shape=(32, 32, 3), **extra
    )
    model = keras.Sequential(
        [keras.Input((32, 32, 3)), backbone, L.GlobalAveragePooling2D(), L.Dense(4, name="head")]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 32, 32, 3)).astype("float32"), rng.integers(0, 4, 32)
    cb = DeepEyesCallback(log_dir=str(tmp_path), run_name=name, maps=False, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    run = load_run(cb.run_dir)
    names = run.layer_names
    inside = [n for n in names if n.startswith(f"{backbone.name}/")]
    assert len(names) <= 24 and len(inside) >= len(names) - 1 and names[-1] == "head"
    assert run.manifest["model"]["recorder_bytes"] <= 256 * 2**20
    last = run.snapshots[-1]
    for n in names:
        layer = last.layers[n]
        assert layer.instances > 0 and np.isfinite(layer.max_activation).all(), n
        assert np.isfinite(layer.samples.descriptor).all() and len(layer.samples.uid) > 0, n


# -- the networks a new user tries, at defaults ---------------------------------------------------


def _small_resnet():
    inputs = keras.Input((16, 16, 3))
    h = L.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    h = L.BatchNormalization()(h)
    h = L.ReLU()(h)
    r = L.Conv2D(8, 3, padding="same", name="res_a")(h)
    r = L.BatchNormalization()(r)
    h = L.Add()([h, L.Conv2D(8, 3, padding="same", name="res_b")(L.ReLU()(r))])
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, L.Dense(3, name="head")(h)), ["stem", "res_a", "res_b", "head"]


def _mobilenet_blocks():
    inputs = keras.Input((16, 16, 3))
    h = L.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    h = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = L.SeparableConv2D(12, 3, padding="same", name="sep")(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, L.Dense(3, name="head")(h)), ["stem", "dw", "sep", "head"]


def _fine_tuning_without_input_shape():
    # The backbone is built without an input shape (its layers' shapes are unknown); the model
    # that uses it has one.
    backbone = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            backbone,
            L.GlobalAveragePooling2D(),
            L.Dense(8, name="fc"),
            L.Dense(3, name="head"),
        ]
    )
    return model, None


def _lstm_then_dense():
    model = keras.Sequential([keras.Input((7, 2)), L.LSTM(6, name="lstm"), L.Dense(3, name="head")])
    return model, ["lstm", "head"]


def _conv1d_over_embedding():
    model = keras.Sequential(
        [
            keras.Input((12,), dtype="int32"),
            L.Embedding(20, 4),
            L.Conv1D(5, 3, name="conv"),
            L.GRU(4, return_sequences=True, name="gru"),
            L.GlobalMaxPooling1D(),
            L.Dense(3, name="head"),
        ]
    )
    return model, ["conv", "gru", "head"]


TABLE = {
    "small ResNet": (_small_resnet, (16, 16, 3)),
    "MobileNet-style blocks": (_mobilenet_blocks, (16, 16, 3)),
    "fine-tuning MobileNetV2(include_top=False)": (_fine_tuning_without_input_shape, (32, 32, 3)),
    "LSTM then Dense": (_lstm_then_dense, (7, 2)),
    "Conv1D and GRU over an Embedding": (_conv1d_over_embedding, (12,)),
}


@pytest.mark.parametrize("case", list(TABLE))
def test_every_network_of_the_table_is_recorded_at_defaults(tmp_path, case):
    keras.utils.set_random_seed(0)
    build, shape = TABLE[case]
    model, expected = build()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, (32, *shape)) if shape == (12,) else rng.random((32, *shape))
    cb = DeepEyesCallback(log_dir=str(tmp_path), run_name="case", maps=False, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x.astype("float32"), rng.integers(0, 3, 32), epochs=1, verbose=0, callbacks=[cb])
    run = load_run(cb.run_dir)
    if expected is not None:
        assert run.layer_names == expected
    else:  # the backbone's layers, by path, and the head
        assert run.layer_names[-1] == "head"
        assert sum(n.startswith("mobilenetv2_0.35_") and "/" in n for n in run.layer_names) >= 20
    for name in run.layer_names:
        layer = run.snapshots[-1].layers[name]
        assert layer.instances > 0 and np.isfinite(layer.max_activation).all(), name


def test_mixed_float16_and_regression_targets(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model, names = _mobilenet_blocks()
        model.compile("adam", "mse")
        rng = np.random.default_rng(0)
        x, y = rng.random((32, 16, 16, 3)).astype("float32"), rng.random((32, 3))
        cb = DeepEyesCallback(log_dir=str(tmp_path), run_name="mixed", maps=False, verbose=0)
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    run = load_run(cb.run_dir)
    assert run.layer_names == names
    for name in names:
        samples = run.snapshots[-1].layers[name].samples
        assert np.isfinite(samples.activation).all() and np.isfinite(samples.descriptor).all()
