"""Receptive-field geometry checked against brute force: the layers' own outputs, NumPy slicing of
explicitly padded inputs, and which outputs a single lit input pixel actually changes."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from deepeyes_keras.record.geometry import (
    AxisMap,
    AxisWindow,
    input_space_maps,
    input_space_maps_by_input,
    layer_paths,
    layer_windows,
)
from deepeyes_keras.record.patches import extract_input_patches, extract_windows

ATOL = 1e-5


def _all_positions(n, grid):
    return tf.constant(np.tile(np.arange(int(np.prod(grid)), dtype=np.int32), (n, 1)))


def _numpy_windows(x, windows):
    """Reference: slice the explicitly zero-padded input at every output position."""
    pads = [(0, 0)] + [(w.pad_before, w.pad_after) for w in windows] + [(0, 0)]
    padded = np.pad(x, pads)
    rows = []
    for pos in itertools.product(*(range(w.out_size) for w in windows)):
        index = [slice(None)]
        for p, w in zip(pos, windows, strict=True):
            start = p * w.stride
            index.append(slice(start, start + (w.kernel - 1) * w.dilation + 1, w.dilation))
        rows.append(padded[tuple(index)].reshape(len(x), -1))
    return np.stack(rows, axis=1)


CONV_CASES = [
    (keras.layers.Conv2D, (11, 11), dict(kernel_size=3)),
    (keras.layers.Conv2D, (11, 11), dict(kernel_size=3, padding="same")),
    (keras.layers.Conv2D, (11, 10), dict(kernel_size=(4, 3), strides=2, padding="same")),
    (keras.layers.Conv2D, (12, 12), dict(kernel_size=3, strides=2)),
    (keras.layers.Conv2D, (12, 12), dict(kernel_size=3, dilation_rate=2)),
    (keras.layers.Conv2D, (12, 11), dict(kernel_size=3, dilation_rate=2, padding="same")),
    (keras.layers.Conv1D, (17,), dict(kernel_size=4, strides=2, padding="same")),
    (keras.layers.Conv1D, (17,), dict(kernel_size=3, padding="causal")),
    (keras.layers.Conv1D, (17,), dict(kernel_size=3, dilation_rate=3, padding="causal")),
    (keras.layers.Conv1D, (17,), dict(kernel_size=5, dilation_rate=2)),
]


@pytest.mark.parametrize("cls, spatial, kwargs", CONV_CASES)
def test_windows_times_kernel_equal_conv_output(cls, spatial, kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, *spatial, 2)).astype("float32")
    layer = cls(
        filters=4,
        use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(seed=1),
        **kwargs,
    )
    y = keras.ops.convert_to_numpy(layer(x))
    windows = layer_windows(layer, (None, *spatial, 2))
    assert tuple(w.out_size for w in windows) == y.shape[1:-1]

    grid = y.shape[1:-1]
    got = extract_windows(tf.constant(x), windows, _all_positions(3, grid)).numpy()
    kernel = keras.ops.convert_to_numpy(layer.kernel).reshape(-1, 4)
    np.testing.assert_allclose(got @ kernel, y.reshape(3, -1, 4), atol=ATOL, rtol=1e-5)
    np.testing.assert_array_equal(got, _numpy_windows(x, windows))

    # A sample of positions, different per image, picks the same rows.
    positions = rng.integers(0, int(np.prod(grid)), size=(3, 5)).astype("int32")
    sampled = extract_windows(tf.constant(x), windows, tf.constant(positions)).numpy()
    np.testing.assert_array_equal(sampled, np.take_along_axis(got, positions[..., None], axis=1))


@pytest.mark.parametrize(
    "layer, spatial",
    [
        (keras.layers.MaxPooling2D(2), (9, 8)),
        (keras.layers.MaxPooling2D(3, strides=2, padding="same"), (9, 8)),
        (keras.layers.MaxPooling1D(3, strides=2), (15,)),
    ],
)
def test_pool_windows_give_pool_output(layer, spatial):
    # Non-negative inputs, so the zeros of extract_windows' padding never win the max.
    x = np.random.default_rng(1).uniform(size=(2, *spatial, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    windows = layer_windows(layer, x.shape)
    got = extract_windows(tf.constant(x), windows, _all_positions(2, y.shape[1:-1])).numpy()
    np.testing.assert_allclose(got.reshape(2, got.shape[1], -1, 3).max(axis=2), y.reshape(2, -1, 3))


def test_dense_windows():
    assert layer_windows(keras.layers.Dense(3), (None, 7)) == ()
    x = np.arange(14, dtype="float32").reshape(2, 7)
    np.testing.assert_array_equal(extract_windows(x, (), tf.zeros((2, 1), tf.int32)), x[:, None])

    # Dense on a sequence acts per position: a 1-wide window per middle axis.
    windows = layer_windows(keras.layers.Dense(3), (None, 6, 4))
    assert windows == (AxisWindow(1, 1, 1, 0, 0, 6, 6),)
    seq = np.random.default_rng(2).normal(size=(2, 6, 4)).astype("float32")
    got = extract_windows(seq, windows, _all_positions(2, (6,))).numpy()
    np.testing.assert_array_equal(got, seq)
    assert layer_windows(keras.layers.ReLU(), (None, 6, 4)) is None


def test_same_padding_matches_tensorflow_formula():
    # Even kernel, stride 2: TensorFlow puts the odd zero after.
    (w,) = layer_windows(keras.layers.Conv1D(1, 4, strides=2, padding="same"), (None, 10, 1))
    assert w == AxisWindow(4, 2, 1, 1, 1, 10, 5)
    (w,) = layer_windows(keras.layers.Conv1D(1, 4, strides=1, padding="same"), (None, 10, 1))
    assert (w.pad_before, w.pad_after, w.out_size) == (1, 2, 10)
    (w,) = layer_windows(keras.layers.Conv1D(1, 3, dilation_rate=2, padding="causal"), (None, 9, 1))
    assert (w.pad_before, w.pad_after, w.out_size) == (4, 0, 9)


def lenet():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(20, 5, name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(50, 5, name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(500, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="fc2"),
        ]
    )


def test_lenet_input_space_maps():
    maps = input_space_maps(lenet())
    assert list(maps) == ["conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2"]
    assert maps["conv1"] == (AxisMap(1, 0, 5),) * 2
    assert maps["pool1"] == (AxisMap(2, 0, 6),) * 2
    assert maps["conv2"] == (AxisMap(2, 0, 14),) * 2
    assert maps["pool2"] == (AxisMap(4, 0, 16),) * 2
    assert maps["flatten"] is maps["fc1"] is maps["fc2"] is None
    assert input_space_maps(lenet(), ["fc2", "conv2"]) == {
        "fc2": None,
        "conv2": (AxisMap(2, 0, 14),) * 2,
    }


def test_tabular_model_has_no_spatial_axes():
    model = keras.Sequential([keras.Input((7,)), keras.layers.Dense(5), keras.layers.Dropout(0.1)])
    assert list(input_space_maps(model).values()) == [(), ()]


def _ones(layer_cls, *args, **kwargs):
    return layer_cls(*args, kernel_initializer="ones", bias_initializer="zeros", **kwargs)


def _lit_pixel_check(model, names, *, exact=True):
    """Feeds one image per input pixel, zero except that pixel; with all-ones kernels, zero bias
    and no ReLU, the outputs that change are those the pixel can reach. They must lie inside the
    box; with ``exact`` they must fill it, else only at positions whose box lies inside the image
    (near a border, taps that read padding are empty although the box counts them)."""
    spatial = model.inputs[0].shape[1:-1]
    pixels = list(itertools.product(*(range(s) for s in spatial)))
    images = np.zeros((len(pixels), *spatial, 1), "float32")
    for k, pixel in enumerate(pixels):
        images[(k, *pixel, 0)] = 1.0
    maps = input_space_maps(model, names)
    for name in names:
        probe = keras.Model(model.inputs[0], model.get_layer(name).output)
        changed = np.abs(keras.ops.convert_to_numpy(probe(images))).max(axis=-1) > 0
        grid = changed.shape[1:]
        expected = np.ones((len(pixels), *grid), bool)
        interior = np.ones(grid, bool)
        for axis, m in enumerate(maps[name]):
            pix = np.array([p[axis] for p in pixels])[:, None]
            start = m.scale * np.arange(grid[axis]) + m.offset
            inside = (start[None, :] <= pix) & (pix <= start[None, :] + m.size - 1)
            shape = [1] * len(grid)
            shape[axis] = grid[axis]
            expected &= inside.reshape([len(pixels), *shape])
            interior &= ((start >= 0) & (start + m.size <= spatial[axis])).reshape(shape)
        assert changed.any(), name
        assert not (changed & ~expected).any(), f"{name}: a pixel reaches outside its box"
        if exact:
            np.testing.assert_array_equal(changed, expected, err_msg=name)
        else:
            assert interior.any(), name
            np.testing.assert_array_equal(changed[:, interior], expected[:, interior], err_msg=name)


def test_maps_brute_force_valid_and_strided():
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            _ones(keras.layers.Conv2D, 2, 3, name="c1"),
            keras.layers.MaxPooling2D(2, name="p1"),
            _ones(keras.layers.Conv2D, 2, 3, strides=2, name="c2"),
            keras.layers.AveragePooling2D(2, strides=1, name="p2"),
        ]
    )
    _lit_pixel_check(model, ["c1", "p1", "c2", "p2"])


def test_maps_brute_force_same_padding():
    model = keras.Sequential(
        [
            keras.Input((29, 28, 1)),
            _ones(keras.layers.Conv2D, 2, 3, padding="same", name="c1"),
            _ones(keras.layers.Conv2D, 2, 4, strides=2, padding="same", name="c2"),
            keras.layers.MaxPooling2D(3, strides=2, padding="same", name="p"),
            keras.layers.ZeroPadding2D(((1, 0), (0, 2)), name="pad"),
            _ones(keras.layers.Conv2D, 2, 2, name="c3"),
        ]
    )
    _lit_pixel_check(model, ["c1", "c2", "p"])
    # Positions made of explicit zero padding depend on nothing; their box is extrapolated.
    _lit_pixel_check(model, ["pad", "c3"], exact=False)


def test_maps_brute_force_dilation():
    model = keras.Sequential(
        [
            keras.Input((15, 15, 1)),
            # A 2-wide kernel first fills the holes the dilated kernels leave, so boxes are exact.
            _ones(keras.layers.Conv2D, 2, 2, name="c1"),
            _ones(keras.layers.Conv2D, 2, 3, dilation_rate=2, name="c2"),
            _ones(keras.layers.Conv2D, 2, 3, dilation_rate=2, padding="same", name="c3"),
        ]
    )
    _lit_pixel_check(model, ["c1", "c2"])
    # 'same' + dilation: at the border a tap lands on padding and leaves a hole in the box.
    _lit_pixel_check(model, ["c3"], exact=False)
    assert input_space_maps(model)["c2"] == (AxisMap(1, 0, 6),) * 2

    # Alone, a dilated kernel skips pixels inside its box: the box is a bounding box.
    alone = keras.Sequential(
        [keras.Input((9, 9, 1)), _ones(keras.layers.Conv2D, 1, 3, dilation_rate=2, name="d")]
    )
    assert input_space_maps(alone)["d"] == (AxisMap(1, 0, 5),) * 2
    lit = np.zeros((2, 9, 9, 1), "float32")
    lit[0, 2, 4], lit[1, 1, 4] = 1.0, 1.0  # a tap of output (0, 0), then a hole between taps
    out = keras.ops.convert_to_numpy(alone(lit))
    assert out[0, 0, 0, 0] == 1.0 and out[1, 0, 0, 0] == 0.0


def test_maps_brute_force_functional_two_branches():
    inputs = keras.Input((13, 13, 1))
    trunk = _ones(keras.layers.Conv2D, 2, 3, name="trunk")(inputs)
    a = _ones(keras.layers.Conv2D, 2, 3, name="a")(trunk)
    # Shifted against branch b along rows only, so that the union of the two boxes is a box.
    a = keras.layers.ZeroPadding2D(((2, 0), (1, 1)), name="a_pad")(a)
    b = _ones(keras.layers.Conv2D, 2, 3, padding="same", name="b")(trunk)
    b = keras.layers.BatchNormalization(name="bn")(b)  # inference: a positive per-channel scale
    merged = keras.layers.Add(name="add")([a, b])
    cropped = keras.layers.Cropping2D(((1, 0), (0, 1)), name="crop")(merged)
    cat = keras.layers.Concatenate(name="cat")(
        [cropped, keras.layers.Activation("linear")(cropped)]
    )
    outputs = keras.layers.MaxPooling2D(2, name="pool")(cat)
    model = keras.Model(inputs, outputs)

    maps = input_space_maps(model)
    assert maps["a_pad"] == (AxisMap(1, -2, 5), AxisMap(1, -1, 5))
    assert maps["b"] == (AxisMap(1, -1, 5),) * 2
    assert maps["add"] == (AxisMap(1, -2, 6), AxisMap(1, -1, 5))
    assert maps["crop"] == (AxisMap(1, -1, 6), AxisMap(1, -1, 5))
    assert maps[model.layers[0].name] == (AxisMap(1, 0, 1),) * 2
    _lit_pixel_check(model, ["trunk", "b"])
    # Branch a has rows and columns of pure zero padding, which reach nothing.
    _lit_pixel_check(model, ["a_pad", "add", "crop", "cat", "pool"], exact=False)


def test_maps_brute_force_conv1d():
    model = keras.Sequential(
        [
            keras.Input((20, 1)),
            _ones(keras.layers.Conv1D, 2, 3, padding="causal", name="c1"),
            _ones(keras.layers.Conv1D, 2, 3, strides=2, padding="same", name="c2"),
            keras.layers.MaxPooling1D(2, name="p"),
        ]
    )
    _lit_pixel_check(model, ["c1", "c2", "p"])
    assert input_space_maps(model)["c1"] == (AxisMap(1, -2, 3),)


def test_grid_lost_and_nested_models():
    block = keras.Sequential(
        [keras.Input((10, 10, 3)), keras.layers.Conv2D(4, 3, strides=2), keras.layers.ReLU()],
        name="block",
    )
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(3, 3, name="stem")(inputs)
    x = block(x)
    x = keras.layers.Conv2D(2, 1, name="after_ops")(keras.ops.relu(x) * 2.0 + x)
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    gated = keras.layers.Multiply(name="gated")([x, gate])
    model = keras.Model(inputs, keras.layers.Flatten(name="flat")(gated))
    maps = input_space_maps(model)
    assert maps["block"] == maps["after_ops"] == (AxisMap(2, 0, 5),) * 2
    assert maps["gap"] is None and maps["gated"] is None and maps["flat"] is None
    assert "relu" not in maps  # plain ops carry maps through but are not layers


def test_shared_layer_is_described_at_its_first_node():
    shared = keras.layers.Conv2D(1, 3, padding="same", name="shared")
    inputs = keras.Input((9, 9, 1))
    outputs = keras.layers.Conv2D(1, 3, name="last")(shared(shared(inputs)))
    maps = input_space_maps(keras.Model(inputs, outputs))
    assert maps["shared"] == (AxisMap(1, -1, 3),) * 2
    assert maps["last"] == (AxisMap(1, -2, 7),) * 2


def test_depthwise_and_separable_windows():
    x = np.random.default_rng(6).normal(size=(2, 10, 9, 3)).astype("float32")
    depthwise = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)
    separable = keras.layers.SeparableConv2D(2, 3, strides=2, padding="same", use_bias=False)
    y_depth, y_sep = (keras.ops.convert_to_numpy(layer(x)) for layer in (depthwise, separable))
    windows = layer_windows(depthwise, x.shape)
    assert windows == layer_windows(separable, x.shape)
    assert tuple(w.out_size for w in windows) == y_depth.shape[1:-1] == y_sep.shape[1:-1]

    # Each channel's 3x3 window times its own 3x3 kernel.
    taps = extract_windows(x, windows, _all_positions(2, y_depth.shape[1:-1])).numpy()
    taps = taps.reshape(2, -1, 9, 3)
    per_channel = np.einsum(
        "npkc,kc->npc", taps, keras.ops.convert_to_numpy(depthwise.kernel).reshape(9, 3)
    )
    np.testing.assert_allclose(per_channel, y_depth.reshape(2, -1, 3), atol=ATOL)
    per_channel = np.einsum(
        "npkc,kc->npc", taps, keras.ops.convert_to_numpy(separable.depthwise_kernel).reshape(9, 3)
    )
    pointwise = keras.ops.convert_to_numpy(separable.pointwise_kernel).reshape(3, 2)
    np.testing.assert_allclose(per_channel @ pointwise, y_sep.reshape(2, -1, 2), atol=ATOL)


def _images(shape, seed=3):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize(
    "maps, spatial",
    [
        ((AxisMap(2, 0, 14), AxisMap(2, 0, 14)), (28, 28)),
        ((AxisMap(2, -3, 7), AxisMap(1, -1, 3)), (11, 9)),
        ((AxisMap(3, 2, 4), AxisMap(2, -2, 5)), (15, 12)),
        ((AxisMap(2, -1, 6),), (17,)),
    ],
)
def test_input_patches_equal_numpy_crop(maps, spatial):
    # The output grid this map would have: every position whose box starts inside the image.
    grid = tuple(
        (n - 1 - max(m.offset, 0)) // m.scale + 1 for m, n in zip(maps, spatial, strict=True)
    )
    x = _images((2, *spatial, 3))
    margin = 20
    padded = np.pad(x, [(0, 0)] + [(margin, margin)] * len(spatial) + [(0, 0)])
    positions = np.random.default_rng(4).integers(0, np.prod(grid), size=(2, 6)).astype("int32")
    got = extract_input_patches(tf.constant(x), maps, grid, tf.constant(positions)).numpy()
    assert got.shape == (2, 6, *(m.size for m in maps), 3)
    for n, p in itertools.product(range(2), range(6)):
        pos = np.unravel_index(positions[n, p], grid)
        crop = tuple(
            slice(m.scale * q + m.offset + margin, m.scale * q + m.offset + margin + m.size)
            for m, q in zip(maps, pos, strict=True)
        )
        np.testing.assert_array_equal(got[n, p], padded[n][crop])


@pytest.mark.parametrize(
    "maps, spatial",
    [
        ((AxisMap(2, -6, 20), AxisMap(2, -6, 20)), (8, 8)),  # wider than the image on both axes
        ((AxisMap(4, -30, 70), AxisMap(1, -1, 3)), (16, 9)),  # on one axis only
        ((AxisMap(8, -100, 363),), (32,)),  # MobileNetV2-like: 363 px on a 32 px input
    ],
)
def test_input_patches_never_outgrow_the_input(maps, spatial):
    grid = tuple(max(1, (n - 1) // m.scale + 1) for m, n in zip(maps, spatial, strict=True))
    x = _images((2, *spatial, 3))
    margin = 20
    padded = np.pad(x, [(0, 0)] + [(margin, margin)] * len(spatial) + [(0, 0)])
    positions = np.random.default_rng(5).integers(0, np.prod(grid), size=(2, 6)).astype("int32")
    got = extract_input_patches(tf.constant(x), maps, grid, tf.constant(positions)).numpy()
    sizes = tuple(min(m.size, n) for m, n in zip(maps, spatial, strict=True))
    assert got.shape == (2, 6, *sizes, 3)
    for n, p in itertools.product(range(2), range(6)):
        pos = np.unravel_index(positions[n, p], grid)
        crop = tuple(
            # a box wider than the input: the whole input axis; else the box, zeros outside
            slice(margin, margin + size)
            if m.size > extent
            else slice(m.scale * q + m.offset + margin, m.scale * q + m.offset + margin + m.size)
            for m, q, size, extent in zip(maps, pos, sizes, spatial, strict=True)
        )
        np.testing.assert_array_equal(got[n, p], padded[n][crop])


def test_a_receptive_field_wider_than_the_image_is_recorded_at_the_image_size(tmp_path):
    from deepeyes_keras import DeepEyesCallback, load_run

    keras.utils.set_random_seed(0)
    layers = [keras.Input((8, 8, 1))]
    layers += [keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=f"c{i}")
               for i in range(5)]  # fmt: skip
    layers += [keras.layers.Flatten(), keras.layers.Dense(3, name="out")]
    model = keras.Sequential(layers)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = _images((32, 8, 8, 1))
    y = np.random.default_rng(0).integers(0, 3, 32)
    cb = DeepEyesCallback(log_dir=str(tmp_path), run_name="deep", maps=False, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    run = load_run(cb.run_dir)
    info = {i["name"]: i for i in run.manifest["analysed_layers"]}
    assert [m["size"] for m in info["c4"]["space_map"]] == [11, 11]  # 5 stacked 3x3: 11 px
    assert info["c4"]["patch_shape"] == [8, 8, 1] and info["c0"]["patch_shape"] == [3, 3, 1]
    samples = run.snapshots[-1].layers["c4"].samples
    assert samples.patch.shape[1:] == (8, 8, 1)
    np.testing.assert_array_equal(samples.box_size[0], [11, 11])


def test_input_patches_of_lenet_conv2_contain_conv2_window():
    model = lenet()
    maps = input_space_maps(model)["conv2"]
    x = _images((2, 28, 28, 1))
    got = extract_input_patches(x, maps, (8, 8), tf.constant([[0, 63], [9, 9]])).numpy()
    np.testing.assert_array_equal(got[0, 1, :, :, 0], x[0, 14:, 14:, 0])
    np.testing.assert_array_equal(got[1, 0], x[1, 2:16, 2:16])
    tabular = extract_input_patches(_images((2, 5)), (), (), tf.zeros((2, 1), tf.int32))
    assert tabular.shape == (2, 1, 5)


def test_ops_compile_with_xla_and_unknown_batch():
    windows = layer_windows(keras.layers.Conv2D(2, 3, strides=2, padding="same"), (None, 9, 9, 2))
    maps = (AxisMap(2, -1, 3),) * 2

    @tf.function(
        jit_compile=True,
        input_signature=[
            tf.TensorSpec((None, 9, 9, 2), tf.float32),
            tf.TensorSpec((None, 4), tf.int32),
        ],
    )
    def both(x, positions):
        return extract_windows(x, windows, positions), extract_input_patches(
            x, maps, (5, 5), positions
        )

    x = _images((3, 9, 9, 2))
    positions = tf.constant(np.random.default_rng(5).integers(0, 25, (3, 4)), tf.int32)
    compiled = both(tf.constant(x), positions)
    np.testing.assert_array_equal(compiled[0], extract_windows(x, windows, positions))
    np.testing.assert_array_equal(compiled[1], extract_input_patches(x, maps, (5, 5), positions))


def test_channels_first_is_rejected():
    layer = keras.layers.Conv2D(2, 3, data_format="channels_first", name="cf_conv")
    with pytest.raises(ValueError, match="cf_conv.*channels_last"):
        layer_windows(layer, (None, 1, 8, 8))
    pool = keras.layers.MaxPooling2D(data_format="channels_first", name="cf_pool")
    with pytest.raises(ValueError, match="cf_pool.*channels_last"):
        layer_windows(pool, (None, 1, 8, 8))


def test_model_errors():
    unbuilt = keras.Sequential([keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match=r"not built.*keras\.Input.*model\.build"):
        input_space_maps(unbuilt)
    unbuilt.build((None, 8, 8, 1))
    assert input_space_maps(unbuilt)[unbuilt.layers[0].name] == (AxisMap(1, 0, 3),) * 2

    a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    two = keras.Model([a, b], keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match="single-input.*input_space_maps_by_input"):
        input_space_maps(two)
    with pytest.raises(TypeError, match="list of names"):
        input_space_maps(lenet(), "conv1")
    with pytest.raises(ValueError, match=r"\['conv'\].*conv1"):
        input_space_maps(lenet(), ["conv1", "conv"])
    with pytest.raises(ValueError, match="unknown spatial size"):
        layer_windows(keras.layers.Conv1D(2, 3), (None, None, 1))


def test_layer_paths_and_maps_inside_sequential_models_nested_twice():
    inner = keras.Sequential(
        [keras.layers.Conv2D(2, 3, padding="same", name="conv"), keras.layers.ReLU(name="relu")],
        name="inner",
    )
    middle = keras.Sequential(
        [keras.layers.Conv2D(2, 3, strides=2, name="down"), inner], name="middle"
    )
    model = keras.Sequential(
        [
            keras.Input((13, 13, 1)),
            keras.layers.ZeroPadding2D(1, name="pad"),
            middle,
            keras.layers.Flatten(name="flat"),
        ]
    )
    paths = ["pad", "middle", "middle/down", "middle/inner", "middle/inner/conv"]
    paths += ["middle/inner/relu", "flat"]
    assert [p for p, _ in layer_paths(model)] == paths
    assert layer_paths(model)[4][1] is inner.get_layer("conv")
    maps = input_space_maps(model)
    assert list(maps) == paths
    assert maps["middle/down"] == (AxisMap(2, -1, 3),) * 2
    assert maps["middle/inner/conv"] == maps["middle"] == (AxisMap(2, -3, 7),) * 2
    assert maps["flat"] is None
    assert input_space_maps(model, ["middle/inner/relu"]) == {
        "middle/inner/relu": maps["middle/inner/conv"]
    }
    assert input_space_maps_by_input(model) == {name: {0: m} for name, m in maps.items()}
    with pytest.raises(ValueError, match=r"\['middle/inner/cnv'\].*'middle/inner/conv'"):
        input_space_maps(model, ["middle/inner/cnv"])
    with pytest.raises(ValueError, match="named by path"):
        input_space_maps(model, ["conv"])


def test_a_nested_model_is_described_at_its_first_call():
    block = keras.Sequential(
        [keras.Input((9, 9, 1)), keras.layers.Conv2D(1, 3, padding="same", name="conv")],
        name="block",
    )
    inputs = keras.Input((9, 9, 1))
    model = keras.Model(inputs, block(block(inputs)))
    maps = input_space_maps(model)
    assert maps["block"] == maps["block/conv"] == (AxisMap(1, -1, 3),) * 2


def test_a_nested_model_with_two_inputs_unites_its_inputs_boxes():
    a, b = keras.Input((8, 8, 1), name="a"), keras.Input((8, 8, 1), name="b")
    ca = keras.layers.Conv2D(1, 3, name="ca")(a)
    crop = keras.layers.Cropping2D(((2, 0), (2, 0)), name="crop")(b)
    joined = keras.layers.Add(name="join")([ca, crop])
    pair = keras.Model([a, b], keras.layers.Conv2D(1, 1, name="out")(joined), name="pair")
    inputs = keras.Input((10, 10, 1))
    stem = keras.layers.Conv2D(1, 3, name="stem")(inputs)
    wide = keras.layers.Conv2D(1, 3, padding="same", name="wide")(stem)
    model = keras.Model(inputs, pair([stem, wide]))
    maps = input_space_maps(model)
    assert maps["wide"] == (AxisMap(1, -1, 5),) * 2
    assert maps["pair/ca"] == (AxisMap(1, 0, 5),) * 2
    assert maps["pair/crop"] == (AxisMap(1, 1, 5),) * 2
    assert maps["pair/join"] == maps["pair/out"] == maps["pair"] == (AxisMap(1, 0, 6),) * 2
    inner = input_space_maps_by_input(pair)
    assert inner["join"] == {0: (AxisMap(1, 0, 3),) * 2, 1: (AxisMap(1, 2, 1),) * 2}
    assert inner["ca"] == {0: (AxisMap(1, 0, 3),) * 2} and inner["crop"] == {1: inner["crop"][1]}


def test_subclassed_models_and_broadcast_grids_give_the_whole_input():
    class Doubler(keras.Model):
        def call(self, x):
            return x * 2.0

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    doubled = Doubler(name="doubler")(x)
    corner = keras.layers.Conv2D(2, 6, name="corner")(x)  # a 1x1 grid
    model = keras.Model(inputs, keras.layers.Add(name="add")([doubled, corner]))
    maps = input_space_maps(model)
    assert maps["doubler"] is None
    assert maps["corner"] == (AxisMap(1, 0, 8),) * 2
    # Position 0 of `corner` is broadcast to every position: the whole input, not a union.
    plain = keras.Model(inputs, keras.layers.Add(name="badd")([x, corner]))
    assert input_space_maps(plain)["badd"] is None
    assert [p for p, _ in layer_paths(model)] == ["conv", "doubler", "corner", "add"]


def test_a_nested_model_of_unknown_spatial_size_takes_the_size_of_its_call():
    def block():
        return keras.Sequential(
            [keras.Input((None, None, 1)), keras.layers.Conv2D(1, 3, strides=2, padding="same")],
            name="block",
        )

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, block()(keras.layers.Conv2D(1, 3, name="stem")(inputs)))
    name = model.get_layer("block").layers[0].name
    maps = input_space_maps(model)
    # 'same' with stride 2 on 6 positions pads one zero after, none before.
    assert maps[f"block/{name}"] == maps["block"] == (AxisMap(2, 0, 5),) * 2
    unknown = keras.Input((None, None, 1))
    with pytest.raises(ValueError, match="unknown spatial size.*nested model"):
        input_space_maps(keras.Model(unknown, block()(unknown)))


def test_layers_that_lose_or_mix_the_grid_give_the_whole_input():
    inputs = keras.Input((8, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    lost = {
        "reshape": keras.layers.Reshape((6, 8, 4), name="reshape")(x),
        "permute": keras.layers.Permute((2, 1, 3), name="permute")(x),
        "norm_rows": keras.layers.LayerNormalization(axis=1, name="norm_rows")(x),
        "cat_rows": keras.layers.Concatenate(axis=1, name="cat_rows")([x, x]),
        "gmp": keras.layers.GlobalMaxPooling2D(keepdims=True, name="gmp")(x),
        "flat": keras.layers.Flatten(name="flat")(x),
        "bicubic": keras.layers.UpSampling2D(1, interpolation="bicubic", name="bicubic")(x),
    }
    kept = {
        "ln": keras.layers.LayerNormalization(name="ln")(x),
        "softmax": keras.layers.Softmax(name="softmax")(x),
        "drop": keras.layers.SpatialDropout2D(0.2, name="drop")(x),
        "up1": keras.layers.UpSampling2D(1, name="up1")(x),
    }
    model = keras.Model(inputs, [*lost.values(), *kept.values()])
    maps = input_space_maps(model)
    assert all(maps[name] is None for name in lost), {n: maps[n] for n in lost}
    assert all(maps[name] == maps["conv"] == (AxisMap(1, -1, 3),) * 2 for name in kept)
