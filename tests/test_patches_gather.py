"""`extract_windows` / `extract_input_patches` gather only the sampled positions, and give exactly
what the former full-grid implementation (`tf.image.extract_patches` over the whole output grid,
then a gather of the sampled positions; kept here as the reference) gave, on many random cases."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from deepeyes_keras.record.geometry import AxisMap, AxisWindow, input_space_maps, layer_windows
from deepeyes_keras.record.patches import extract_input_patches, extract_windows

# --- The former implementation, verbatim (only renamed), as the reference. ---------------------


def _reference_as_image(x):
    return x[:, :, tf.newaxis, :] if x.shape.rank == 3 else x


def _reference_patches_at(patches, positions):
    depth = patches.shape[-1]
    flat = tf.reshape(patches, [tf.shape(patches)[0], -1, depth])
    return tf.gather(flat, tf.cast(positions, tf.int32), axis=1, batch_dims=1)


def _reference_extract_windows(inputs, windows, positions):
    inputs = tf.convert_to_tensor(inputs)
    if not windows:
        return tf.reshape(inputs, [-1, 1, math.prod(inputs.shape[1:])])
    if len(windows) not in (1, 2) or inputs.shape.rank != len(windows) + 2:
        raise ValueError(
            f"extract_windows expects 1 or 2 spatial axes matching the input. Received: "
            f"{len(windows)} windows for an input of shape {inputs.shape}."
        )
    pads = [[0, 0]] + [[w.pad_before, w.pad_after] for w in windows] + [[0, 0]]
    padded = _reference_as_image(tf.pad(inputs, pads))
    wins = (*windows, AxisWindow(1, 1, 1, 0, 0, 1, 1))[:2]
    patches = tf.image.extract_patches(
        padded,
        *([1, *(getattr(w, key) for w in wins), 1] for key in ("kernel", "stride", "dilation")),
        padding="VALID",
    )
    grid, expected = tuple(patches.shape[1:3]), tuple(w.out_size for w in wins)
    if grid != expected:
        raise ValueError(
            f"Windows do not match the input: they give an output grid {expected} but the input "
            f"of shape {inputs.shape} gives {grid}. Compute windows with layer_windows(layer, "
            "input_shape) for this very input."
        )
    return _reference_patches_at(patches, positions)


def _reference_clip_to_input(maps, out_grid, positions, input_sizes):
    sizes = [int(n) for n in input_sizes]
    wide = [m.size > n for m, n in zip(maps, sizes, strict=True)]
    if not any(wide):
        return maps, out_grid, positions
    coords = []
    rest = tf.convert_to_tensor(positions)
    for extent in reversed(out_grid):
        coords.append(rest % extent)
        rest = rest // extent
    coords = coords[::-1]
    new_maps, new_grid, flat = [], [], tf.zeros_like(coords[0])
    for m, out, n, clip, c in zip(maps, out_grid, sizes, wide, coords, strict=True):
        new_maps.append(AxisMap(scale=1, offset=0, size=n) if clip else m)
        new_grid.append(1 if clip else out)
        flat = flat * new_grid[-1] + (tf.zeros_like(c) if clip else c)
    return tuple(new_maps), tuple(new_grid), flat


def _reference_extract_input_patches(images, maps, out_grid, positions):
    images = tf.convert_to_tensor(images)
    if not maps:
        return tf.reshape(images, [-1, 1, math.prod(images.shape[1:])])
    if len(maps) not in (1, 2) or images.shape.rank != len(maps) + 2 or len(out_grid) != len(maps):
        raise ValueError(
            f"extract_input_patches expects 1 or 2 spatial axes matching images and out_grid. "
            f"Received: {len(maps)} maps, out_grid={out_grid}, images of shape {images.shape}."
        )
    maps, out_grid, positions = _reference_clip_to_input(
        maps, out_grid, positions, images.shape[1:-1]
    )
    crops, pads = [slice(None)], [[0, 0]]
    for m, out, n in zip(maps, out_grid, images.shape[1:-1], strict=True):
        end = m.scale * (out - 1) + m.offset + m.size
        start, stop = max(m.offset, 0), max(min(end, n), max(m.offset, 0))
        crops.append(slice(start, stop))
        before = max(-m.offset, 0)
        pads.append([before, end - m.offset - before - (stop - start)])
    padded = _reference_as_image(tf.pad(images[tuple(crops)], pads + [[0, 0]]))
    sizes = [m.size for m in maps] + [1] * (2 - len(maps))
    scales = [m.scale for m in maps] + [1] * (2 - len(maps))
    patches = tf.image.extract_patches(
        padded, sizes=[1, *sizes, 1], strides=[1, *scales, 1], rates=[1, 1, 1, 1], padding="VALID"
    )
    flat = _reference_patches_at(patches, positions)
    return tf.reshape(flat, [tf.shape(flat)[0], -1, *sizes[: len(maps)], images.shape[-1]])


# --- Random cases. ------------------------------------------------------------------------------


def _positions(rng, n, grid, p=None):
    """(n, P) flat positions, always including the first and the last position of the grid."""
    total = math.prod(grid)
    p = p or int(rng.integers(1, 13))
    pos = rng.integers(0, total, size=(n, p))
    pos[0, 0] = total - 1
    pos[-1, -1] = 0
    return tf.constant(pos, tf.int32)


def _assert_same_windows(x, windows, positions):
    want = _reference_extract_windows(x, windows, positions).numpy()
    got = extract_windows(x, windows, positions).numpy()
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def _assert_same_patches(x, maps, grid, positions):
    want = _reference_extract_input_patches(x, maps, grid, positions).numpy()
    got = extract_input_patches(x, maps, grid, positions).numpy()
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def _random_layer(rng, rank):
    """A random Keras sliding-window layer of the given spatial rank."""
    kind = rng.choice(["conv", "depthwise", "maxpool", "avgpool"] if rank == 2 else
                      ["conv", "depthwise", "maxpool", "avgpool", "causal"])  # fmt: skip
    kernel = tuple(int(k) for k in rng.integers(1, 6, size=rank))
    strides = tuple(int(s) for s in rng.integers(1, 4, size=rank))
    dilation = tuple(int(d) for d in rng.integers(1, 3, size=rank))
    if max(strides) > 1:  # Keras refuses strides > 1 with dilation > 1
        dilation = (1,) * rank
    padding = str(rng.choice(["valid", "same"]))
    d = "2D" if rank == 2 else "1D"
    if kind in ("conv", "causal"):
        padding = "causal" if kind == "causal" else padding
        return getattr(keras.layers, f"Conv{d}")(
            2, kernel, strides=strides, dilation_rate=dilation, padding=padding
        )
    if kind == "depthwise":
        return getattr(keras.layers, f"DepthwiseConv{d}")(
            kernel, strides=strides, dilation_rate=dilation, padding=padding
        )
    pool = {"maxpool": "MaxPooling", "avgpool": "AveragePooling"}[kind]
    return getattr(keras.layers, f"{pool}{d}")(kernel, strides=strides, padding=padding)


@pytest.mark.parametrize("seed", range(60))
def test_windows_of_keras_layers_equal_the_full_grid_reference(seed):
    rng = np.random.default_rng(seed)
    rank = 1 + seed % 2
    layer = _random_layer(rng, rank)
    n, c = int(rng.integers(1, 4)), int(rng.integers(1, 5))
    for low in range(5, 64, 4):  # a kernel wider than a 'valid' input has no output: grow it
        spatial = tuple(int(s) for s in rng.integers(low, low + 11, size=rank))
        windows = layer_windows(layer, (None, *spatial, c))
        if min(w.out_size for w in windows) >= 1:
            break
    x = tf.constant(rng.normal(size=(n, *spatial, c)).astype("float32"))
    _assert_same_windows(x, windows, _positions(rng, n, [w.out_size for w in windows]))


@pytest.mark.parametrize("seed", range(40))
def test_hand_made_windows_equal_the_full_grid_reference(seed):
    # Any stride, dilation and padding on each side, also stride and dilation > 1 together.
    rng = np.random.default_rng(100 + seed)
    rank = 1 + seed % 2
    windows = []
    for size in rng.integers(4, 14, size=rank):
        kernel, stride, dilation = (int(v) for v in rng.integers(1, [6, 4, 3]))
        before, after = (int(v) for v in rng.integers(0, kernel + 1, size=2))
        span = int(size) + before + after - (kernel - 1) * dilation
        if span < 1:
            before, after, span = kernel * dilation, kernel * dilation, span + 2 * kernel * dilation
        windows.append(
            AxisWindow(kernel, stride, dilation, before, after, int(size), (span - 1) // stride + 1)
        )
    spatial = tuple(w.in_size for w in windows)
    n, c = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    x = tf.constant(rng.normal(size=(n, *spatial, c)).astype("float32"))
    _assert_same_windows(x, tuple(windows), _positions(rng, n, [w.out_size for w in windows]))


def _random_stack(rng, rank, spatial, c):
    """A small random conv / pooling stack (boxes reaching past the image, and, deep enough,
    wider than it)."""
    layers = [keras.Input((*spatial, c))]
    for _ in range(int(rng.integers(1, 6))):
        layers.append(_random_layer(rng, rank))
        if rng.random() < 0.2:
            pad = getattr(keras.layers, f"ZeroPadding{rank}D")(int(rng.integers(1, 3)))
            layers.append(pad)
    try:
        return keras.Sequential(layers)
    except ValueError:  # the grid shrank to nothing
        return None


@pytest.mark.parametrize("seed", range(40))
def test_input_patches_of_random_stacks_equal_the_full_grid_reference(seed):
    rng = np.random.default_rng(200 + seed)
    rank = 1 + seed % 2
    spatial = tuple(int(s) for s in rng.integers(8, 20, size=rank))
    c = int(rng.integers(1, 4))
    model = None
    while model is None:  # until a stack keeps an output grid
        model = _random_stack(rng, rank, spatial, c)
    x = tf.constant(rng.normal(size=(3, *spatial, c)).astype("float32"))
    checked = 0
    for name, maps in input_space_maps(model).items():
        grid = tuple(model.get_layer(name).output.shape[1:-1])
        if maps is None or min(grid) < 1:
            continue
        _assert_same_patches(x, maps, grid, _positions(rng, 3, grid))
        checked += 1
    assert checked


@pytest.mark.parametrize("seed", range(40))
def test_hand_made_boxes_equal_the_full_grid_reference(seed):
    # Boxes starting before and after the image's start, ending past it, wider than it.
    rng = np.random.default_rng(300 + seed)
    rank = 1 + seed % 2
    spatial = tuple(int(s) for s in rng.integers(3, 16, size=rank))
    maps, grid = [], []
    for n in spatial:
        scale = int(rng.integers(1, 5))
        size = int(rng.integers(1, 2 * n + 3))
        offset = int(rng.integers(-size, 4))
        out = int(rng.integers(1, (n - 1) // scale + 3))
        out = max(out, (-offset - size) // scale + 2)  # the last box reaches the image
        maps.append(AxisMap(scale, offset, size))
        grid.append(out)
    c = int(rng.integers(1, 4))
    x = tf.constant(rng.normal(size=(2, *spatial, c)).astype("float32"))
    _assert_same_patches(x, tuple(maps), tuple(grid), _positions(rng, 2, grid))


def test_resnet_like_boxes_and_windows_equal_the_reference():
    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(size=(4, 96, 96, 3)).astype("float32"))
    maps = (AxisMap(4, -22, 51),) * 2
    _assert_same_patches(x, maps, (24, 24), _positions(rng, 4, (24, 24), p=10))
    h = tf.constant(rng.normal(size=(4, 24, 24, 16)).astype("float32"))
    windows = layer_windows(keras.layers.Conv2D(4, 3, padding="same"), (None, 24, 24, 16))
    _assert_same_windows(h, windows, _positions(rng, 4, (24, 24), p=10))


def test_other_dtypes_dense_and_tabular_equal_the_reference():
    rng = np.random.default_rng(8)
    windows = layer_windows(keras.layers.Conv2D(2, 3, strides=2), (None, 9, 9, 2))
    maps = (AxisMap(2, -1, 5),) * 2
    for dtype in ("float16", "int32", "float64"):
        x = tf.constant(rng.integers(-9, 9, size=(2, 9, 9, 2)).astype(dtype))
        _assert_same_windows(x, windows, _positions(rng, 2, (4, 4)))
        _assert_same_patches(x, maps, (4, 4), _positions(rng, 2, (4, 4)))
    flat = tf.constant(rng.normal(size=(3, 7)).astype("float32"))
    zeros = tf.zeros((3, 1), tf.int32)
    _assert_same_windows(flat, (), zeros)
    _assert_same_patches(flat, (), (), zeros)
    seq = tf.constant(rng.normal(size=(3, 5, 4)).astype("float32"))
    _assert_same_windows(seq, (), zeros)  # dense on a sequence: flattened


# --- Errors: the same as before. ----------------------------------------------------------------


def _message(fn, *args):
    with pytest.raises(Exception) as info:
        fn(*args)
    return type(info.value), str(info.value)


@pytest.mark.parametrize(
    "args",
    [
        (tf.zeros((2, 9, 9, 1)), (AxisWindow(3, 1, 1, 0, 0, 9, 9),) * 2),  # wrong grid
        (tf.zeros((2, 9, 1)), (AxisWindow(3, 2, 1, 1, 1, 9, 6),)),  # wrong grid, 1-D
        (tf.zeros((2, 9, 9, 1)), (AxisWindow(3, 1, 1, 0, 0, 9, 7),)),  # too few windows
        (tf.zeros((2, 9, 9, 1)), (AxisWindow(3, 1, 1, 0, 0, 9, 7),) * 3),  # too many
        (tf.zeros((2, 3, 3, 1)), (AxisWindow(3, 2, 1, 0, 0, 3, 2),) * 2),  # no window fits
    ],
)
def test_window_errors_are_unchanged(args):
    positions = tf.zeros((2, 1), tf.int32)
    assert _message(extract_windows, *args, positions) == _message(
        _reference_extract_windows, *args, positions
    )


def test_a_window_wider_than_the_padded_input_is_a_clear_error():
    # (The former implementation failed in tf.image.extract_patches: "Computed output size would
    # be negative".)
    windows = (AxisWindow(5, 1, 1, 0, 0, 3, 1),) * 2
    with pytest.raises(ValueError, match=r"output grid \(1, 1\) but .* gives \(0, 0\)"):
        extract_windows(tf.zeros((2, 3, 3, 1)), windows, tf.zeros((2, 1), tf.int32))


@pytest.mark.parametrize(
    "args",
    [
        (tf.zeros((2, 9, 9, 1)), (AxisMap(1, -1, 3),), (9, 9)),
        (tf.zeros((2, 9, 9, 1)), (AxisMap(1, -1, 3),) * 2, (9,)),
        (tf.zeros((2, 9, 1)), (AxisMap(1, -1, 3),) * 2, (9, 9)),
        (tf.zeros((2, 9, 9, 1)), (AxisMap(1, -20, 3),) * 2, (9, 9)),  # boxes all before the image
    ],
)
def test_patch_errors_are_unchanged(args):
    positions = tf.zeros((2, 1), tf.int32)
    assert _message(extract_input_patches, *args, positions) == _message(
        _reference_extract_input_patches, *args, positions
    )


def test_positions_outside_the_grid_fail_as_before():
    x = tf.zeros((2, 9, 9, 1))
    bad = tf.constant([[0], [81]], tf.int32)
    windows = (AxisWindow(3, 1, 1, 1, 1, 9, 9),) * 2
    maps = (AxisMap(1, -1, 3),) * 2
    kind, message = _message(extract_windows, x, windows, bad)
    assert kind is tf.errors.InvalidArgumentError and "= 81 is not in [0, 81)" in message
    kind, message = _message(extract_input_patches, x, maps, (9, 9), bad)
    assert kind is tf.errors.InvalidArgumentError and "= 81 is not in [0, 81)" in message


def test_unknown_spatial_sizes_give_the_same_error():
    windows = (AxisWindow(3, 1, 1, 1, 1, 9, 9),) * 2
    spec = [tf.TensorSpec((None, None, None, 2)), tf.TensorSpec((None, 1), tf.int32)]

    def errors(fn):
        traced = tf.function(lambda x, p: fn(x, windows, p), input_signature=spec)
        with pytest.raises(ValueError) as info:
            traced.get_concrete_function()
        return str(info.value).split("ValueError: ")[-1]

    assert errors(extract_windows) == errors(_reference_extract_windows)


# --- Compiled, and never the full grid. ---------------------------------------------------------

WINDOWS = layer_windows(keras.layers.Conv2D(2, 3, strides=2, padding="same"), (None, 9, 9, 2))
MAPS = (AxisMap(2, -1, 3),) * 2
SEQ_WINDOWS = layer_windows(keras.layers.Conv1D(2, 3, dilation_rate=2, padding="causal"),
                            (None, 11, 2))  # fmt: skip
SPEC = [tf.TensorSpec((None, 9, 9, 2), tf.float32), tf.TensorSpec((None, 4), tf.int32)]


def test_both_compile_with_xla_and_keep_their_static_shapes():
    rng = np.random.default_rng(9)
    x = tf.constant(rng.normal(size=(3, 9, 9, 2)).astype("float32"))
    positions = _positions(rng, 3, (5, 5), p=4)

    windows = tf.function(lambda x, p: extract_windows(x, WINDOWS, p), jit_compile=True)
    patches = tf.function(
        lambda x, p: extract_input_patches(x, (AxisMap(2, -6, 20), MAPS[0]), (5, 5), p),
        jit_compile=True,
    )
    want = _reference_extract_windows(x, WINDOWS, positions)
    np.testing.assert_array_equal(windows(x, positions), want)
    want = _reference_extract_input_patches(x, (AxisMap(2, -6, 20), MAPS[0]), (5, 5), positions)
    np.testing.assert_array_equal(patches(x, positions), want)
    seq = tf.constant(rng.normal(size=(3, 11, 2)).astype("float32"))
    seq_positions = _positions(rng, 3, (11,), p=4)
    compiled = tf.function(lambda x, p: extract_windows(x, SEQ_WINDOWS, p), jit_compile=True)
    want = _reference_extract_windows(seq, SEQ_WINDOWS, seq_positions)
    np.testing.assert_array_equal(compiled(seq, seq_positions), want)

    for new, old in (
        (extract_windows, _reference_extract_windows),
        (extract_input_patches, _reference_extract_input_patches),
    ):
        args = (WINDOWS,) if new is extract_windows else (MAPS, (5, 5))
        shapes = []
        for f in (new, old):
            traced = tf.function(lambda x, p, f=f, args=args: f(x, *args, p))
            shapes.append(traced.get_concrete_function(*SPEC).structured_outputs.shape.as_list())
        # The same static shape, or a more precise one (a known number of positions).
        assert len(shapes[0]) == len(shapes[1])
        assert all(b is None or a == b for a, b in zip(*shapes, strict=True)), shapes


def test_no_full_grid_patches_are_built():
    windows = tf.function(lambda x, p: extract_windows(x, WINDOWS, p))
    patches = tf.function(lambda x, p: extract_input_patches(x, MAPS, (5, 5), p))
    for fn in (windows, patches):
        ops = {op.type for op in fn.get_concrete_function(*SPEC).graph.get_operations()}
        assert "ExtractImagePatches" not in ops and "GatherV2" in ops, ops
    # The largest intermediate is the padded input (11 x 11 x 2) or the P = 4 sampled windows
    # (4 x 3 x 3 x 2), never the whole grid of windows (5 x 5 x 3 x 3 x 2 = 450 per image).
    for fn in (windows, patches):
        graph = fn.get_concrete_function(*SPEC).graph
        biggest = max(
            math.prod(d or 1 for d in t.shape.as_list())  # per image: the batch axis is None
            for op in graph.get_operations()
            for t in op.outputs
            if t.shape.rank
        )
        assert biggest <= max(11 * 11 * 2, 4 * 3 * 3 * 2), biggest


@pytest.mark.parametrize("n, p", [(0, 3), (2, 0), (0, 0)])
def test_empty_batches_and_samples(n, p):
    x, positions = tf.zeros((n, 9, 9, 2)), tf.zeros((n, p), tf.int32)
    _assert_same_windows(x, WINDOWS, positions)
    # (The former implementation gave (0, 1, 3, 3, 2) for n = p = 0: a reshape guessing P.)
    assert extract_input_patches(x, MAPS, (5, 5), positions).shape == (n, p, 3, 3, 2)
    if n or p:
        _assert_same_patches(x, MAPS, (5, 5), positions)
