"""Input-space boxes checked by brute force: perturb each input pixel, see which outputs change.

Models get random weights bounded away from zero (random signs), random biases and, for batch
normalisation, random moving statistics (evaluated with training=False); activations are linear or
leaky, so an influence never vanishes by chance. In float64, a pixel changes an output position
(beyond round-off) exactly when some path joins them. Every influencing pixel must lie inside the
computed box; where the box lies inside the image and nothing makes it loose, the box must equal
the bounding box of the influencing pixels ("tight"). UpSampling boxes are one box for every
position of the upsampled grid, so there "hull": the box is the smallest of its scale holding every
position's influencing pixels.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from deepeyes_keras.record.geometry import (
    AxisMap,
    input_space_maps,
    input_space_maps_by_input,
    layer_paths,
)

L = keras.layers


@pytest.fixture(autouse=True)
def float64():
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(policy)


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if "moving_variance" in w.path:
            value = rng.uniform(0.5, 2.0, shape)
        else:  # magnitudes in [0.5, 1.5], random signs (also BN gamma, beta, moving mean)
            value = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
        w.assign(value)
    return model


def influence(fn, bases: list[np.ndarray], which: int, seed: int = 1) -> np.ndarray:
    """``changed[u, *grid]``: perturbing unit ``u`` of input ``which`` changes the output there.

    A unit is a pixel (all its channels together) of an image input, a feature of a rank-1
    (tabular) sample. The other inputs keep their base values.
    """
    rng = np.random.default_rng(seed)
    base = bases[which]
    units = base.shape[:-1] if base.ndim > 1 else base.shape
    count = int(np.prod(units))
    batch = np.repeat(base[None], count + 1, axis=0)
    flat = batch[1:].reshape(count, count, -1)  # a view: (image, unit, channels)
    delta = rng.uniform(1.0, 2.0, (count, flat.shape[-1])) * rng.choice([-1, 1], (count, 1))
    flat[np.arange(count), np.arange(count)] += delta
    inputs = [np.repeat(b[None], count + 1, axis=0) for b in bases]
    inputs[which] = batch
    out = keras.ops.convert_to_numpy(fn(inputs if len(bases) > 1 else inputs[0]))
    diff = np.abs(out[1:] - out[:1]).max(axis=-1)
    # Round-off is about eps times the largest value; a real influence is far above its root.
    changed = diff > np.sqrt(np.finfo(out.dtype).eps) * max(float(np.abs(out).max()), 1.0)
    return changed.reshape(*units, *out.shape[1:-1])


def check_box(changed: np.ndarray, maps, spatial, *, tight: str | None = "box", name: str = ""):
    """Influencing pixels lie inside the box (clipped to the input); ``tight="box"``: at positions
    whose box lies inside the input, the box is their bounding box; ``"hull"``: the box is the
    smallest of its scale that holds every such position's influencing pixels."""
    rank = len(spatial)
    grid = changed.shape[rank:]
    assert len(maps) == rank == len(grid), name
    flat = changed.reshape(int(np.prod(spatial)), -1)  # (pixel, position)
    assert flat.any(), f"{name}: nothing influences the layer"
    pixel = np.unravel_index(np.arange(flat.shape[0]), spatial)
    position = np.unravel_index(np.arange(flat.shape[1]), grid)
    inside = np.ones_like(flat)
    interior = np.ones(flat.shape[1], bool)
    for axis, m in enumerate(maps):
        start = m.scale * position[axis] + m.offset
        end = start + m.size - 1
        p = pixel[axis][:, None]
        inside &= (start[None] <= p) & (p <= end[None])
        interior &= (start >= 0) & (end < spatial[axis])
    assert not (flat & ~inside).any(), f"{name}: a pixel reaches outside its box {maps}"
    if tight is None:
        return
    reached = flat.any(axis=0) & interior
    assert reached.any(), f"{name}: no position has its box inside the input"
    for axis, m in enumerate(maps):
        p = pixel[axis][:, None].astype(float)
        first = np.where(flat, p, np.inf).min(axis=0)[reached] - m.scale * position[axis][reached]
        last = np.where(flat, p, -np.inf).max(axis=0)[reached] - m.scale * position[axis][reached]
        if tight == "box":
            np.testing.assert_array_equal(first, m.offset, err_msg=f"{name} axis {axis}")
            np.testing.assert_array_equal(last, m.offset + m.size - 1, err_msg=f"{name} {axis}")
        else:
            assert (first.min(), last.max()) == (m.offset, m.offset + m.size - 1), (name, axis)


def probe(model: keras.Model, name: str):
    inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]
    sub = keras.Model(inputs, model.get_layer(name).output)
    return lambda x: sub(x, training=False)


def check_layers(model: keras.Model, names: list[str], *, tight="box", seed: int = 0) -> dict:
    randomize(model, seed)
    spatial = tuple(model.inputs[0].shape[1:-1])
    base = np.random.default_rng(seed + 7).normal(size=model.inputs[0].shape[1:])
    maps = input_space_maps(model, names)
    for name in names:
        changed = influence(probe(model, name), [base], 0)
        check_box(changed, maps[name], spatial, tight=tight, name=name)
    return maps


def test_residual_block():
    inputs = keras.Input((16, 16, 2))
    x = L.Conv2D(4, 3, strides=2, padding="same", name="conv_a")(inputs)
    x = L.BatchNormalization(name="bn_a")(x)
    x = L.ReLU(negative_slope=0.3, name="relu_a")(x)  # leaky: no influence switched off
    x = L.Conv2D(4, 3, padding="same", name="conv_b")(x)
    shortcut = L.Conv2D(4, 1, strides=2, name="shortcut")(inputs)
    outputs = L.Add(name="add")([x, shortcut])
    model = keras.Model(inputs, outputs)
    maps = check_layers(model, ["conv_a", "bn_a", "relu_a", "conv_b", "shortcut", "add"])
    assert maps["conv_a"] == maps["relu_a"] == (AxisMap(2, 0, 3),) * 2
    assert maps["shortcut"] == (AxisMap(2, 0, 1),) * 2
    assert maps["conv_b"] == maps["add"] == (AxisMap(2, -2, 7),) * 2
    by_input = input_space_maps_by_input(model)
    assert by_input == {name: {0: m} for name, m in input_space_maps(model).items()}


def test_mobilenet_style_block():
    inputs = keras.Input((16, 16, 3))
    x = L.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(inputs)
    x = L.DepthwiseConv2D(3, strides=2, padding="valid", name="dw")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(4, 1, name="pw")(x)
    pooled = L.AveragePooling2D(2, name="pool")(inputs)
    x = L.Concatenate(name="cat")([x, pooled])
    outputs = L.Conv2D(4, 3, padding="same", name="head")(x)
    maps = check_layers(keras.Model(inputs, outputs), ["dw", "pw", "pool", "cat", "head"])
    assert maps["dw"] == maps["pw"] == maps["cat"] == (AxisMap(2, 0, 3),) * 2
    assert maps["pool"] == (AxisMap(2, 0, 2),) * 2
    assert maps["head"] == (AxisMap(2, -2, 7),) * 2


def test_cropping_and_padding():
    model = keras.Sequential(
        [
            keras.Input((14, 13, 2)),
            L.Conv2D(3, 3, padding="same", name="c1"),
            L.Cropping2D(((1, 2), (0, 1)), name="crop"),
            L.Conv2D(3, 2, strides=2, name="c2"),
            L.ZeroPadding2D(((0, 0), (1, 0)), name="pad"),
            L.Conv2D(3, 2, name="c3"),
        ]
    )
    maps = check_layers(model, ["c1", "crop", "c2", "c3"])
    assert maps["crop"] == (AxisMap(1, 0, 3), AxisMap(1, -1, 3))
    assert maps["c2"] == (AxisMap(2, 0, 4), AxisMap(2, -1, 4))
    assert maps["c3"] == (AxisMap(2, 0, 6), AxisMap(2, -3, 6))


def test_merges_of_all_kinds():
    inputs = keras.Input((12, 12, 2))
    a = L.Conv2D(3, 3, padding="same", name="a")(inputs)
    b = L.Conv2D(3, 3, name="b")(L.ZeroPadding2D(1)(inputs))  # same box, other path
    c = L.Conv2D(3, 1, name="c")(inputs)
    merged = [
        L.Subtract(name="sub")([a, c]),
        L.Multiply(name="mul")([a, b]),
        L.Average(name="avg")([a, b, c]),
        L.Maximum(name="max")([a, c]),
        L.Minimum(name="min")([b, c]),
    ]
    model = keras.Model(inputs, L.Concatenate(name="all")(merged))
    maps = check_layers(model, ["sub", "mul", "avg", "all"])
    assert set(maps.values()) == {(AxisMap(1, -1, 3),) * 2}
    # An elementwise max or min follows one operand per element: inside the box, not tight.
    check_layers(model, ["max", "min"], tight=None)


@pytest.mark.parametrize(
    "stride, size, expected",
    [
        (2, 2, (AxisMap(1, -1, 4),) * 2),  # s = 2, f = 2: one input pixel per position, shifted
        (4, 2, (AxisMap(2, -2, 5),) * 2),
        (2, (2, 1), (AxisMap(1, -1, 4), AxisMap(2, 0, 3))),
    ],
)
def test_upsampling_nearest_when_the_factor_divides_the_scale(stride, size, expected):
    model = keras.Sequential(
        [
            keras.Input((16, 16, 2)),
            L.Conv2D(3, 3, strides=stride, padding="same", name="down"),
            L.UpSampling2D(size, name="up"),
            L.Conv2D(3, 3, name="after"),
        ]
    )
    maps = check_layers(model, ["up", "after"], tight="hull")
    assert maps["up"] == expected


def test_upsampling_by_a_factor_not_dividing_the_scale_is_the_whole_input():
    model = keras.Sequential(
        [
            keras.Input((12, 12, 2)),
            L.Conv2D(3, 3, strides=2, padding="same", name="down"),
            L.UpSampling2D(3, name="up3"),  # s = 2, f = 3
            L.UpSampling2D(2, name="up2"),  # still no grid
        ]
    )
    maps = input_space_maps(model)
    assert maps["down"] == (AxisMap(2, 0, 3),) * 2
    assert maps["up3"] is None and maps["up2"] is None
    stride_one = keras.Sequential([keras.Input((8, 1)), L.Conv1D(2, 3), L.UpSampling1D(2)])
    assert list(input_space_maps(stride_one).values()) == [(AxisMap(1, 0, 3),), None]


def test_upsampling_1d():
    model = keras.Sequential(
        [
            keras.Input((24, 2)),
            L.Conv1D(3, 3, strides=3, name="down"),
            L.UpSampling1D(3, name="up"),
            L.Conv1D(3, 2, name="after"),
        ]
    )
    maps = check_layers(model, ["up", "after"], tight="hull")
    assert maps["up"] == (AxisMap(1, -2, 5),)


def test_upsampling_bilinear_reads_the_neighbours():
    model = keras.Sequential(
        [
            keras.Input((16, 16, 2)),
            L.Conv2D(3, 3, strides=2, padding="same", name="down"),
            L.UpSampling2D(2, interpolation="bilinear", name="up"),
        ]
    )
    maps = check_layers(model, ["up"], tight="hull")
    assert maps["up"] == (AxisMap(1, -2, 6),) * 2
    # An odd factor: the middle position may read a neighbour with a rounding-sized weight, so
    # the box holds both neighbours there; inside the box, not tight.
    odd = keras.Sequential(
        [
            keras.Input((15, 15, 1)),
            L.Conv2D(2, 3, strides=3, name="down"),
            L.UpSampling2D(3, interpolation="bilinear", name="up"),
        ]
    )
    assert check_layers(odd, ["up"], tight=None)["up"] == (AxisMap(1, -4, 9),) * 2
    # Stride 1, factor 2: no box of integer scale fits, the whole input.
    direct = keras.Sequential([keras.Input((6, 6, 1)), L.UpSampling2D(2, interpolation="bilinear")])
    assert list(input_space_maps(direct).values()) == [None]


def test_conv1d_causal_dilated_then_same():
    model = keras.Sequential(
        [
            keras.Input((24, 2)),
            L.Conv1D(3, 3, padding="causal", dilation_rate=2, name="causal"),
            L.LayerNormalization(name="ln"),
            L.LeakyReLU(0.3, name="leaky"),
            L.Conv1D(3, 3, padding="same", name="same"),
            L.Conv1D(3, 2, strides=2, name="down"),
            L.ZeroPadding1D((2, 1), name="pad"),
            L.Cropping1D((1, 0), name="crop"),
            L.Conv1D(3, 2, name="last"),
        ]
    )
    # The dilated taps x-4, x-2, x leave holes, but its edges are taps: the bounding box is tight.
    maps = check_layers(model, ["causal", "ln", "leaky", "same", "down", "pad", "crop", "last"])
    assert maps["causal"] == maps["ln"] == (AxisMap(1, -4, 5),)
    assert maps["same"] == (AxisMap(1, -5, 7),)
    assert maps["down"] == (AxisMap(2, -5, 8),)
    assert maps["pad"] == (AxisMap(2, -9, 8),) and maps["crop"] == (AxisMap(2, -7, 8),)
    assert maps["last"] == (AxisMap(2, -7, 10),)


def nested_model():
    """outer: stem conv -> middle (a Functional model: conv -> inner) -> global pool -> dense;
    inner: a Functional model (conv stride 2 -> BN -> leaky -> conv)."""
    x = keras.Input((8, 8, 4), name="inner_in")
    y = L.Conv2D(4, 3, strides=2, padding="same", name="conv")(x)
    y = L.BatchNormalization(name="bn")(y)
    y = L.LeakyReLU(0.3, name="act")(y)
    inner = keras.Model(x, L.Conv2D(4, 3, padding="same", name="conv2")(y), name="inner")
    x = keras.Input((16, 16, 4), name="middle_in")
    down = L.Conv2D(4, 3, strides=2, padding="same", name="down")(x)
    middle = keras.Model(x, inner(down), name="middle")
    x = keras.Input((18, 18, 2), name="image")
    stem = L.Conv2D(4, 3, name="stem")(x)
    y = L.GlobalAveragePooling2D(name="gap")(middle(stem))
    outer = keras.Model(x, L.Dense(3, name="head")(y), name="outer")
    return outer, middle, inner, stem, down


def test_layer_inside_a_model_inside_a_model():
    outer, middle, inner, stem, down = nested_model()
    randomize(outer)
    assert [p for p, _ in layer_paths(outer)] == [
        "stem",
        "middle",
        "middle/down",
        "middle/inner",
        "middle/inner/conv",
        "middle/inner/bn",
        "middle/inner/act",
        "middle/inner/conv2",
        "gap",
        "head",
    ]
    maps = input_space_maps(outer)
    assert list(maps) == ["image", *(p for p, _ in layer_paths(outer))]
    assert maps["middle/down"] == (AxisMap(2, 0, 5),) * 2
    assert maps["middle/inner/conv"] == (AxisMap(4, 0, 9),) * 2
    assert maps["middle/inner/conv2"] == maps["middle/inner"] == maps["middle"]
    assert maps["middle"] == (AxisMap(4, -4, 17),) * 2
    assert maps["gap"] is maps["head"] is None
    # The nested layer's output, reached by chaining the outer and inner graphs by hand.
    to_stem = keras.Model(outer.inputs[0], stem)
    to_down = keras.Model(middle.inputs[0], down)
    base = np.random.default_rng(3).normal(size=(18, 18, 2))
    for name in ["conv", "act", "conv2"]:
        to_layer = keras.Model(inner.inputs[0], inner.get_layer(name).output)
        chained = lambda x, f=to_layer: f(to_down(to_stem(x)), training=False)  # noqa: E731
        changed = influence(chained, [base], 0)
        check_box(changed, maps[f"middle/inner/{name}"], (18, 18), name=name)
    assert input_space_maps(outer, ["middle/inner/bn"]) == {
        "middle/inner/bn": maps["middle/inner/conv"]
    }


def test_two_inputs_joined_after_global_pooling():
    image, table = keras.Input((11, 11, 2), name="image"), keras.Input((5,), name="table")
    x = L.Conv2D(3, 3, name="conv")(image)
    x = L.Conv2D(3, 3, strides=2, name="conv2")(x)
    pooled = L.GlobalAveragePooling2D(name="gap")(x)
    t = L.Dense(4, name="table_dense")(table)
    joined = L.Concatenate(name="cat")([pooled, t])
    model = keras.Model([image, table], L.Dense(2, name="head")(joined))
    randomize(model)
    by_input = input_space_maps_by_input(model)
    assert by_input["image"] == {0: (AxisMap(1, 0, 1),) * 2} and by_input["table"] == {1: ()}
    assert by_input["conv"] == {0: (AxisMap(1, 0, 3),) * 2}
    assert by_input["conv2"] == {0: (AxisMap(2, 0, 5),) * 2}
    assert by_input["gap"] == {0: None} and by_input["table_dense"] == {1: ()}
    assert by_input["cat"] == by_input["head"] == {0: None, 1: ()}
    assert input_space_maps_by_input(model, ["head", "conv"]) == {
        "head": by_input["head"],
        "conv": by_input["conv"],
    }
    with pytest.raises(ValueError, match="input_space_maps_by_input"):
        input_space_maps(model)

    rng = np.random.default_rng(4)
    bases = [rng.normal(size=(11, 11, 2)), rng.normal(size=(5,))]
    conv2 = probe(model, "conv2")
    check_box(influence(conv2, bases, 0), by_input["conv2"][0], (11, 11), name="conv2")
    assert not influence(conv2, bases, 1).any()  # absent: the table does not reach conv2
    assert not influence(probe(model, "table_dense"), bases, 0).any()
    head = probe(model, "head")
    assert influence(head, bases, 0).all() and influence(head, bases, 1).all()  # None: all


def test_two_inputs_table_tiled_onto_the_grid():
    image, table = keras.Input((12, 12, 2), name="image"), keras.Input((5,), name="table")
    grid = L.Conv2D(4, 3, padding="same", name="conv")(image)
    t = L.Dense(4, name="table_dense")(table)
    t = L.Reshape((1, 1, 4), name="table_grid")(t)
    tiled = L.UpSampling2D(12, name="tiled")(t)  # the same vector at every position
    added = L.Add(name="add")([grid, tiled])
    broadcast = L.Add(name="add_broadcast")([added, t])  # (12, 12, 4) + (1, 1, 4)
    outputs = L.Conv2D(3, 3, strides=2, name="after")(broadcast)
    model = keras.Model([image, table], outputs)
    randomize(model)
    by_input = input_space_maps_by_input(model)
    assert by_input["conv"] == {0: (AxisMap(1, -1, 3),) * 2}
    assert by_input["table_grid"] == by_input["tiled"] == {1: None}
    assert by_input["add"] == by_input["add_broadcast"] == {0: (AxisMap(1, -1, 3),) * 2, 1: None}
    assert by_input["after"] == {0: (AxisMap(2, -1, 5),) * 2, 1: None}

    rng = np.random.default_rng(5)
    bases = [rng.normal(size=(12, 12, 2)), rng.normal(size=(5,))]
    for name in ["add", "add_broadcast", "after"]:
        fn = probe(model, name)
        check_box(influence(fn, bases, 0), by_input[name][0], (12, 12), name=name)
        assert influence(fn, bases, 1).all(), name  # every feature reaches every position


def test_mobilenet_v2_backbone_in_a_sequential_model():
    keras.config.set_floatx("float32")  # the application builds in the default precision
    keras.config.set_dtype_policy("float32")
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35
    )
    model = keras.Sequential([backbone, L.GlobalAveragePooling2D(), L.Dense(10)])
    name = backbone.name
    paths = [p for p, _ in layer_paths(model)]
    assert paths[0] == name and paths[-2:] == [model.layers[1].name, model.layers[2].name]
    assert len(paths) == len(backbone.layers) - 1 + 3  # the backbone's InputLayer left out
    maps = input_space_maps(model)
    inner = input_space_maps(backbone)
    for layer in backbone.layers[1:]:  # fed by the model input itself: the backbone's own maps
        assert maps[f"{name}/{layer.name}"] == inner[layer.name], layer.name
    assert maps[f"{name}/block_1_depthwise"] == (AxisMap(4, -2, 11),) * 2
    assert maps[f"{name}/block_2_add"] == (AxisMap(4, -6, 19),) * 2  # union with the shortcut
    assert maps[f"{name}/out_relu"] == maps[name] and maps[name][0].scale == 32
    # ReLU6 switches influences off, so only containment holds; float32 round-off allowed for.
    for layer in ["block_1_depthwise", "block_2_add"]:
        sub = keras.Model(backbone.inputs[0], backbone.get_layer(layer).output)
        base = np.random.default_rng(6).normal(size=(32, 32, 3)).astype("float32")
        changed = influence(lambda x, f=sub: f(x, training=False), [base], 0)
        check_box(changed, maps[f"{name}/{layer}"], (32, 32), tight=None, name=layer)

    # Built with input_shape=None (sizes unknown to the backbone), it takes the size of its call.
    free = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35)
    assert free.inputs[0].shape[1:3] == (None, None)
    free_maps = input_space_maps(keras.Sequential([keras.Input((32, 32, 3)), free]))

    def inner_paths(found, prefix):
        return {p.split("/", 1)[1]: m for p, m in found.items() if p.startswith(prefix + "/")}

    assert inner_paths(free_maps, free.name) == inner_paths(maps, name)
