"""DeepEyesCallback end to end on tiny real models (no mocks of our own code)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import deepeyes_keras
from deepeyes_keras import DeepEyesCallback, load_run
from deepeyes_keras.run.layout import BETA, N_BINS

pytestmark = pytest.mark.slow


def images(n=64, size=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 1)).astype("float32")
    y = rng.integers(0, 3, n)
    return x, y


def small_cnn(with_input=True):
    layers = [
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(3, name="dense"),
    ]
    if with_input:
        layers = [keras.Input((8, 8, 1))] + layers
    model = keras.Sequential(layers, name="small_cnn")
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def callback(tmp_path, **kwargs):
    kwargs.setdefault("run_name", "run")
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("maps", False)  # the maps stage is tested in test_maps.py
    return DeepEyesCallback(log_dir=tmp_path / "runs", **kwargs)


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_file())


def strict_load(path):
    def reject(token):
        raise ValueError(f"non-strict JSON token {token} in {path}")

    return json.loads(Path(path).read_text(), parse_constant=reject)


def test_constructor_validates_and_touches_no_disk(tmp_path):
    DeepEyesCallback(log_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match="snapshot_every=0"):
        DeepEyesCallback(snapshot_every=0)
    with pytest.raises(ValueError, match="layers"):
        DeepEyesCallback(layers="conv1")
    with pytest.raises(ValueError, match="reservoir_size"):
        DeepEyesCallback(reservoir_size=-3)
    with pytest.raises(ValueError, match="probe_data"):
        DeepEyesCallback(probe_data=(np.zeros((3, 2)), np.zeros(2)))


def test_exact_files_and_reader_on_sequential_without_input(tmp_path):
    x, y = images(48)
    model = small_cnn(with_input=False)
    cb = callback(
        tmp_path,
        snapshot_every=2,
        sample_every=1,
        images_per_step=4,
        positions_per_image=3,
        reservoir_size=500,
    )
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])  # 6 steps
    run_dir = tmp_path / "runs" / "run"
    assert cb.run_dir == run_dir
    expected = ["manifest.json", "model.json"]
    for step in (2, 4, 6):
        expected += [
            f"snapshots/step-{step:08d}.json",
            f"snapshots/step-{step:08d}.npz",
            f"samples/L0/entries-{step:08d}.npz",
            f"samples/L1/entries-{step:08d}.npz",
        ]
    assert files_under(run_dir) == sorted(expected)

    manifest = strict_load(run_dir / "manifest.json")
    assert manifest["status"] == "finished"
    assert manifest["schema_version"] == 3  # SCHEMA_VERSION of run/layout.py
    assert set(manifest["versions"]) >= {"deepeyes_keras", "keras", "tensorflow"}
    assert [layer["name"] for layer in manifest["analysed_layers"]] == ["conv", "dense"]
    assert manifest["model"]["parameters"] == model.count_params()
    conv_info = next(layer for layer in manifest["model"]["layers"] if layer["name"] == "conv")
    assert conv_info["filters"] == 4 and conv_info["parameters"] == 4 * 9 + 4

    run = load_run(run_dir)
    assert [s.step for s in run.snapshots] == [2, 4, 6]
    conv = run.snapshots[-1].layers["conv"]
    assert conv.max_activation.shape == (4,) and conv.frequency.shape == (4,)
    assert conv.reliability_age.shape == (4,) and conv.jaccard.shape == (4, 4)
    assert conv.label_activation.shape == (4, 3)
    assert conv.perplexity_histogram.shape == (N_BINS,)
    assert conv.perplexity_change.shape == (N_BINS,)
    # Two sampled steps per interval, 4 images x 3 positions each.
    assert conv.perplexity_histogram.sum() == pytest.approx(2 * 4 * 3)
    dense = run.snapshots[-1].layers["dense"]
    assert dense.perplexity_histogram.sum() == pytest.approx(2 * 4 * 3)  # weighted like conv
    samples = conv.samples
    assert len(samples) == 6 * 4 * 3
    assert samples.descriptor.shape == (72, 9) and samples.patch.shape == (72, 3, 3, 1)
    assert run.metrics()["step"] == [1, 2, 3, 4, 5, 6]
    assert len(run.metrics()["loss"]) == 6


def test_reader_loads_only_the_arrays_asked_for(tmp_path, monkeypatch):
    # The run-wide views read the histograms of every snapshot; holding every co-activation
    # matrix too made the maps worker's memory grow with the run.
    x, y = images(32)
    cb = callback(tmp_path, snapshot_every=2, sample_every=1, images_per_step=4)
    small_cnn().fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    run = load_run(cb.run_dir)
    stored = {}
    for snap in run.snapshots:
        with np.load(run.path / snap.record["arrays"]) as data:
            stored[snap.step] = {k: data[k] for k in data.files}
        assert "L0.jaccard" in stored[snap.step]
    # Every array the reader takes out of a .npz file (NumPy's NpzFile, not our code).
    read = []
    npz_getitem = np.lib.npyio.NpzFile.__getitem__

    def counting_getitem(npz, key):
        read.append(key)
        return npz_getitem(npz, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", counting_getitem)
    for snap in run.snapshots:
        read.clear()
        histogram = snap.layers["conv"].perplexity_histogram
        np.testing.assert_array_equal(histogram, stored[snap.step]["L0.perplexity_histogram"])
        assert snap.layers["conv"].perplexity_histogram is histogram  # read once, then kept
        assert read == ["L0.perplexity_histogram"]
    monkeypatch.undo()
    with pytest.raises(KeyError):
        run.snapshots[0].array("L0.no_such_field")


def test_statistics_agree_with_numpy_on_every_kept_instance(tmp_path):
    # With a learning rate of 0 the weights never change and the reservoir keeps every instance,
    # so everything the callback recorded can be recomputed from the stored samples.
    x, y = images(64, seed=1)
    model = small_cnn()
    model.compile(
        keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    cb = callback(
        tmp_path,
        snapshot_every=4,
        sample_every=1,
        images_per_step=4,
        positions_per_image=5,
        reservoir_size=1000,
    )
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    run = load_run(cb.run_dir)
    last = run.snapshots[-1]
    conv = last.layers["conv"]
    s = conv.samples
    assert len(s) == 8 * 4 * 5
    acts = np.maximum(s.activation.astype(np.float64), 0)
    kernel, bias = model.get_layer("conv").get_weights()

    # The descriptor is the layer-input window, and this layer's input is the image: for the
    # first layer the input-space patch and the descriptor are the same pixels.
    np.testing.assert_allclose(s.descriptor.reshape(-1, 3, 3, 1), s.patch, atol=1e-3)
    recomputed = s.descriptor.astype(np.float64) @ kernel.reshape(9, 4) + bias
    np.testing.assert_allclose(s.activation, recomputed, atol=2e-3)  # float16 descriptors

    np.testing.assert_allclose(conv.max_activation, acts.max(0), rtol=1e-6)
    mins = np.minimum(acts[:, :, None], acts[:, None, :]).sum(0)
    maxs = np.maximum(acts[:, :, None], acts[:, None, :]).sum(0)
    ref = np.where(maxs > 0, mins / np.where(maxs > 0, maxs, 1), 0.0)  # never fired: 0
    np.testing.assert_allclose(conv.jaccard, ref, rtol=0, atol=1 / 60_000)  # uint16 codes
    by_label = np.stack([acts[s.label == c].sum(0) for c in range(3)], axis=1)
    np.testing.assert_allclose(conv.label_activation, by_label, rtol=1e-5)
    running = np.zeros(4)
    above = np.zeros(4)
    for step in np.unique(s.step):
        a = acts[s.step == step]
        running = np.maximum(running, a.max(0))
        above += (a > BETA * running).sum(0)
    np.testing.assert_allclose(conv.frequency, above / len(acts), rtol=1e-6)
    # Box of each instance: its output position maps to the same place in the input.
    rows, cols = np.unravel_index(s.position, (6, 6))
    np.testing.assert_array_equal(s.box_start, np.stack([rows, cols], 1))
    np.testing.assert_array_equal(s.box_size, np.full((len(s), 2), 3))
    # Perplexity histograms: intervals add up to the histogram of all instances.
    total = sum(snap.layers["conv"].perplexity_histogram for snap in run.snapshots)
    p = acts / np.where(acts.sum(1, keepdims=True) > 0, acts.sum(1, keepdims=True), 1)
    p[acts.sum(1) == 0] = 0.25
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log2(p), 0).sum(1)
    scaled = (2**h - 1) / 3 * 30
    bins = np.clip(np.floor(scaled).astype(int), 0, 29)
    # float32 (TF) and float64 (here) may disagree for an instance sitting on a bin edge only.
    on_edge = int((np.abs(scaled - np.round(scaled)) < 1e-4).sum())
    assert total.sum() == len(acts)
    assert np.abs(total - np.bincount(bins, minlength=30)).sum() <= 2 * on_edge
    first, second = run.snapshots[0].layers["conv"], run.snapshots[1].layers["conv"]
    np.testing.assert_allclose(
        second.perplexity_change, second.perplexity_histogram - first.perplexity_histogram
    )


def test_ground_truth_dead_always_on_and_duplicate_filters(tmp_path):
    x, y = images(64, seed=2)
    model = small_cnn()
    conv = model.get_layer("conv")
    kernel = np.random.default_rng(0).normal(size=(3, 3, 1, 4)).astype("float32")
    kernel[..., 0] = 0.0  # dead: zero kernel, negative bias
    kernel[..., 1] = 0.0  # always on: zero kernel, positive bias
    kernel[..., 3] = kernel[..., 2]  # duplicated
    conv.set_weights([kernel, np.array([-1.0, 1.0, 0.0, 0.0], "float32")])
    conv.trainable = False
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = callback(tmp_path, sample_every=1)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[cb])
    layer = load_run(cb.run_dir).snapshots[-1].layers["conv"]
    assert layer.max_activation[0] == 0.0 and layer.frequency[0] == 0.0
    assert layer.frequency[1] == 1.0 and layer.max_activation[1] == pytest.approx(1.0)
    assert layer.jaccard[2, 3] == pytest.approx(1.0, abs=1e-6)
    assert layer.jaccard[2, 3] > layer.jaccard[2, 1]


def test_two_fits_continue_one_run(tmp_path):
    x, y = images(40)
    model = small_cnn()
    cb = callback(tmp_path, snapshot_every=3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])  # steps 1-5
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])  # steps 6-10
    run = load_run(tmp_path / "runs" / "run")
    assert [s.step for s in run.snapshots] == [3, 5, 6, 9, 10]
    assert run.metrics()["step"] == list(range(1, 11))
    assert "train_step" not in vars(model)  # the model is left as it was


def test_interrupted_run_keeps_every_completed_snapshot(tmp_path):
    class Boom(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 6:
                raise RuntimeError("power cut")

    x, y = images(80)
    cb = callback(tmp_path, snapshot_every=2)
    with pytest.raises(RuntimeError, match="power cut"):
        small_cnn().fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[cb, Boom()])
    run = load_run(tmp_path / "runs" / "run")
    assert [s.step for s in run.snapshots] == [2, 4, 6]
    assert run.status == "training"
    for snap in run.snapshots:
        assert snap.layers["conv"].frequency.shape == (4,)
    assert not list((tmp_path / "runs" / "run").rglob(".*tmp*"))


def test_functional_dataset_one_hot_labels(tmp_path):
    x, y = images(32)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(3, 3, padding="same", strides=2, name="c")(inputs)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "categorical_crossentropy")
    ds = tf.data.Dataset.from_tensor_slices((x, keras.utils.to_categorical(y, 3))).batch(8)
    cb = callback(tmp_path, sample_every=1, reservoir_size=1000)
    model.fit(ds, epochs=1, verbose=0, callbacks=[cb])
    snap = load_run(cb.run_dir).snapshots[-1]
    assert sorted(set(snap.layers["out"].samples.label)) == sorted(set(y))
    assert snap.layers["c"].samples.box_size[0].tolist() == [3, 3]


def test_conv1d_and_tabular_models(tmp_path):
    rng = np.random.default_rng(3)
    seq = keras.Sequential(
        [
            keras.Input((20, 2)),
            keras.layers.Conv1D(5, 4, dilation_rate=2),
            keras.layers.GlobalMaxPooling1D(),
            keras.layers.Dense(2),
        ]
    )
    seq.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = callback(tmp_path, run_name="seq")
    seq.fit(
        rng.random((32, 20, 2)), rng.integers(0, 2, 32), batch_size=8, verbose=0, callbacks=[cb]
    )
    conv = load_run(cb.run_dir).snapshots[-1].layers[seq.layers[0].name]
    assert conv.samples.descriptor.shape[1] == 4 * 2 and conv.samples.box_size[0].tolist() == [7]

    tab = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    tab.compile("sgd", "binary_crossentropy")
    cb = callback(tmp_path, run_name="tab")
    tab.fit(rng.random((32, 6)), rng.integers(0, 2, 32), batch_size=8, verbose=0, callbacks=[cb])
    run = load_run(cb.run_dir)
    hidden = run.snapshots[-1].layers[tab.layers[0].name]
    assert hidden.samples.patch.shape[1:] == (6,) and hidden.label_activation.shape == (8, 2)


def test_subclassed_model_gets_a_clear_error(tmp_path):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    model = Net()
    model.compile("sgd", "mse")
    with pytest.raises(TypeError, match="Functional"):
        model.fit(np.zeros((8, 3)), np.zeros((8, 2)), verbose=0, callbacks=[callback(tmp_path)])


def test_unknown_layers_are_all_listed_with_close_matches(tmp_path):
    cb = callback(tmp_path, layers=["conv", "dens", "poo", "nothing_like_it"])
    with pytest.raises(ValueError) as err:
        small_cnn().fit(*images(16), verbose=0, callbacks=[cb])
    message = str(err.value)
    assert "'dens' (did you mean 'dense'?)" in message
    assert "'poo' (did you mean 'pool'?)" in message
    assert "'nothing_like_it'" in message and "'conv'" not in message.split(":")[1]


def test_unsupported_layer_is_named_in_one_warning_and_skipped(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2DTranspose(3, 3, name="up"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="head"),
        ]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = callback(tmp_path, layers=["up", "head"])
    with pytest.warns(UserWarning, match=r"1 layer.*up \(Conv2DTranspose: transposed conv"):
        model.fit(np.random.rand(16, 6, 6, 1), np.zeros(16), verbose=0, callbacks=[cb])
    assert load_run(cb.run_dir).layer_names == ["head"]
    cb = callback(tmp_path, run_name="default")  # the default choice names it too
    with pytest.warns(UserWarning, match=r"up \(Conv2DTranspose"):
        model.fit(np.random.rand(16, 6, 6, 1), np.zeros(16), verbose=0, callbacks=[cb])


def test_unwritable_log_dir_fails_before_the_first_step(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")

    class Count(keras.callbacks.Callback):
        batches = 0

        def on_train_batch_end(self, batch, logs=None):
            Count.batches += 1

    cb = DeepEyesCallback(log_dir=blocker / "runs", verbose=0)
    with pytest.raises(PermissionError, match=str(blocker / "runs")):
        small_cnn().fit(*images(16), verbose=0, callbacks=[cb, Count()])
    assert Count.batches == 0


def test_nan_activations_do_not_crash_and_json_stays_strict(tmp_path):
    model = small_cnn()
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[0, 0, 0, 0] = np.nan
    model.get_layer("conv").set_weights([kernel, bias])
    cb = callback(tmp_path, snapshot_every=2)
    model.fit(*images(32), batch_size=8, verbose=0, callbacks=[cb])
    run_dir = tmp_path / "runs" / "run"
    for path in run_dir.rglob("*.json"):
        strict_load(path)
    run = load_run(run_dir)
    assert run.snapshots[-1].layers["conv"].nonfinite > 0
    assert np.isfinite(run.snapshots[-1].layers["conv"].max_activation).all()


def test_probe_data_is_sampled_instead_of_batches(tmp_path):
    x, y = images(32)
    probe_x = np.ones((5, 8, 8, 1), "float32")
    cb = callback(tmp_path, probe_data=(probe_x, np.full(5, 2)), reservoir_size=1000)
    small_cnn().fit(x, y, batch_size=8, verbose=0, callbacks=[cb])
    s = load_run(cb.run_dir).snapshots[-1].layers["conv"].samples
    assert set(s.label) == {2}
    np.testing.assert_allclose(s.patch, 1.0)


def test_reading_needs_no_tensorflow(tmp_path):
    cb = callback(tmp_path)
    small_cnn().fit(*images(16), verbose=0, callbacks=[cb])
    code = textwrap.dedent(f"""
        import sys
        import deepeyes_keras
        run = deepeyes_keras.load_run({str(cb.run_dir)!r})
        run.snapshots[-1].layers["conv"].samples
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TF imported"
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    code = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from deepeyes_keras import DeepEyesCallback, load_run
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                                      keras.layers.Flatten(), keras.layers.Dense(3)])
            model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(0)
        x, y = rng.random((64, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 64)
        cb = DeepEyesCallback(log_dir={str(tmp_path)!r}, run_name="mirrored", verbose=0,
                              snapshot_every=2, sample_every=1, maps=False)
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb])
        run = load_run(cb.run_dir)
        assert [s.step for s in run.snapshots] == [2, 4, 6, 8], run.snapshots
        layer = run.snapshots[-1].layers[model.layers[0].name]
        assert layer.max_activation.max() > 0 and len(layer.samples) > 0
        print("MIRRORED OK")
    """)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MIRRORED OK" in out.stdout


def test_public_api():
    assert deepeyes_keras.DeepEyesCallback is DeepEyesCallback
    assert callable(deepeyes_keras.load_run)


def test_steps_per_execution_still_hits_every_snapshot(tmp_path):
    x, y = images(96)
    model = small_cnn()
    model.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=3
    )
    cb = callback(tmp_path, snapshot_every=4, sample_every=2, reservoir_size=1000)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])  # 12 steps, 4 calls
    run = load_run(cb.run_dir)
    # Calls end at steps 3, 6, 9, 12: snapshots when a multiple of 4 was crossed.
    assert [s.step for s in run.snapshots] == [6, 9, 12]
    assert len(run.snapshots[-1].layers["conv"].samples) > 0


def test_a_new_callback_never_overwrites_an_existing_run(tmp_path):
    x, y = images(16)
    small_cnn().fit(x, y, verbose=0, callbacks=[callback(tmp_path)])
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        small_cnn().fit(x, y, verbose=0, callbacks=[callback(tmp_path)])
    assert load_run(tmp_path / "runs" / "run").status == "finished"


def test_a_second_fit_traces_nothing_again(tmp_path):
    """Issue 15: the one-off cost is paid once. The measurement is traced once for the callback,
    the wrapped train step is compiled once, and a plain fit after it reuses the model's own
    compiled step; compiling the model again gives fresh functions (the old ones are stale)."""
    x, y = images(32)
    model = small_cnn()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # the model's own compiled step
    own = model.train_function
    cb = callback(tmp_path, snapshot_every=3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    wrapped = cb._hook._kept["wrapped"]
    assert wrapped is not own and model.train_function is own  # given back after fit
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    assert cb._recorder.measure.experimental_get_tracing_count() == 1
    assert cb._hook._kept["wrapped"] is wrapped  # not compiled again
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert model.train_function is own
    run = load_run(tmp_path / "runs" / "run")
    # steps follow the model's (4 plain steps came first); the plain fit after recorded nothing
    assert run.metrics()["step"] == list(range(5, 13))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    assert cb._hook._kept["wrapped"] is not wrapped  # recompiled: the new optimizer is used
    assert len(model.optimizer.variables) > 1  # adam's slots exist: its step really ran
    assert len(load_run(tmp_path / "runs" / "run").metrics()["step"]) == 12
