"""TensorFlow ops that cut receptive fields out of tensors, for the compiled measurement.

`extract_windows` returns the neuronal receptive field of sampled output positions of a layer (the
window of the layer's input that its kernel reads) and `extract_input_patches` the input-space patch
(the box of the model input that can reach the position). Their geometry comes from
``deepeyes_keras/record/geometry.py``. Both gather only the sampled positions' windows out of one
zero-padded copy of the input (memory ``O(n * P * window)`` beyond that copy, never a window per
grid position), and use only static shapes, so both run inside a compiled (also XLA)
``tf.function``.

Example:
    >>> wins = layer_windows(conv2, conv2.input.shape)
    >>> rf = extract_windows(conv2_inputs, wins, positions)  # (n, P, 5*5*20)
    >>> boxes = input_space_maps(model)["conv2"]
    >>> patches = extract_input_patches(x, boxes, (8, 8), positions)  # (n, P, 14, 14, 1)
"""

from __future__ import annotations

import math

import tensorflow as tf

from deepeyes_keras.record.geometry import AxisMap, AxisWindow


def _gather_windows(padded, grid, steps, kernels, dilations, positions) -> tf.Tensor:
    """The windows of sampled output positions, gathered out of a padded input.

    Output position ``q`` (per spatial axis) reads the padded input at ``q*step + d*dilation``
    for ``d = 0..kernel-1``; these indices must lie inside the padded input.

    Args:
        padded: ``(n, *spatial, C)`` with static spatial sizes.
        grid, steps, kernels, dilations: Per spatial axis: the number of output positions, the
            step between them, the window's size and the step between its taps.
        positions: ``(n, P)`` integer flat output positions, row-major over ``grid``.

    Returns:
        ``(n, P, *kernels, C)``.
    """
    spatial = [int(s) for s in padded.shape[1:-1]]
    # Flat index, in the padded input, of each output position's first tap and of each tap
    # relative to it (row-major over the spatial axes).
    starts, taps = tf.zeros([1], tf.int32), tf.zeros([], tf.int32)
    for axis, (out, step, kernel, dilation) in enumerate(
        zip(grid, steps, kernels, dilations, strict=True)
    ):
        row = math.prod(spatial[axis + 1 :])
        starts = tf.reshape(starts[:, None] + tf.range(out) * (step * row), [-1])
        taps = taps[..., None] + tf.range(kernel) * (dilation * row)
    # Gathering the starts by flat position fails (CPU) or clamps (XLA) on positions outside the
    # grid exactly like gathering a whole grid of windows would.
    first = tf.gather(starts, tf.cast(positions, tf.int32))
    index = first[(...,) + (tf.newaxis,) * len(spatial)] + taps  # (n, P, *kernels)
    flat = tf.reshape(padded, [-1, math.prod(spatial), padded.shape[-1]])
    return tf.gather(flat, index, axis=1, batch_dims=1)


def _valid_size(size: int | None, kernel: int, stride: int, dilation: int) -> int | None:
    """Output positions of a VALID window along an axis of ``size`` (None when unknown)."""
    return None if size is None else max((int(size) - (kernel - 1) * dilation - 1) // stride + 1, 0)


def extract_windows(
    inputs: tf.Tensor, windows: tuple[AxisWindow, ...], positions: tf.Tensor
) -> tf.Tensor:
    """The neuronal receptive fields of sampled output positions of a layer.

    For image ``n`` and flat output position ``positions[n, p]`` (row-major over the output grid):
    the window of the layer *input* that the kernel reads, zeros where it crosses padding, flattened
    in ``(k_h, k_w, C)`` order like a Conv2D kernel, so ``window @ kernel.reshape(-1, F)`` is the
    conv output.

    Args:
        inputs: The layer input, ``(n, *in_spatial, C)`` with 1 or 2 spatial axes, or ``(n, D)``.
        windows: The layer's windows, from `layer_windows`.
        positions: ``(n, P)`` integer flat output positions.

    Returns:
        ``(n, P, prod(kernel) * C)``; for ``windows == ()`` (dense on a vector) ``(n, 1, D)`` and
        ``positions`` is ignored.

    Example:
        >>> wins = layer_windows(conv, x.shape)
        >>> extract_windows(x, wins, tf.constant([[0, 5]]))  # (1, 2, kh*kw*C)
    """
    inputs = tf.convert_to_tensor(inputs)
    if not windows:
        return tf.reshape(inputs, [-1, 1, math.prod(inputs.shape[1:])])
    if len(windows) not in (1, 2) or inputs.shape.rank != len(windows) + 2:
        raise ValueError(
            f"extract_windows expects 1 or 2 spatial axes matching the input. Received: "
            f"{len(windows)} windows for an input of shape {inputs.shape}."
        )
    # Pad explicitly, then read VALID windows: this reproduces 'same' and 'causal' convolutions
    # exactly, with the same zeros where the window crosses the border.
    pads = [[0, 0]] + [[w.pad_before, w.pad_after] for w in windows] + [[0, 0]]
    padded = tf.pad(inputs, pads)
    sizes = padded.shape[1:-1]
    grid = [
        _valid_size(n, w.kernel, w.stride, w.dilation) for n, w in zip(sizes, windows, strict=True)
    ]
    # Reported as 2-D grids (a 1-D input as a grid one position wide).
    grid, expected = tuple(grid + [1])[:2], tuple([w.out_size for w in windows] + [1])[:2]
    if grid != expected:
        raise ValueError(
            f"Windows do not match the input: they give an output grid {expected} but the input "
            f"of shape {inputs.shape} gives {grid}. Compute windows with layer_windows(layer, "
            "input_shape) for this very input."
        )
    keys = ("out_size", "stride", "kernel", "dilation")
    found = _gather_windows(padded, *([getattr(w, k) for w in windows] for k in keys), positions)
    depth = math.prod(w.kernel for w in windows) * inputs.shape[-1]
    return tf.reshape(found, tf.concat([tf.shape(found)[:2], [depth]], 0))


def clipped_sizes(maps: tuple[AxisMap, ...], input_sizes) -> tuple[int, ...]:
    """Patch size per spatial axis: the box's, but never more than the input's (deep layers of
    small images have receptive fields far larger than the image)."""
    return tuple(min(m.size, int(n)) for m, n in zip(maps, input_sizes, strict=True))


def clip_to_input(maps, out_grid, positions, input_sizes):
    """Axes whose box is wider than the input: every position's patch is the whole input axis.

    Such an axis becomes one position covering the input (scale 1, offset 0, size = the input's),
    and the flat positions are re-indexed accordingly, so the patch never outgrows the input
    (the true box is stored beside it, in ``box_start`` / ``box_size``).
    """
    sizes = [int(n) for n in input_sizes]
    wide = [m.size > n for m, n in zip(maps, sizes, strict=True)]
    if not any(wide):
        return maps, out_grid, positions
    coords = []
    rest = tf.convert_to_tensor(positions)
    for extent in reversed(out_grid):  # row-major flat index -> per-axis coordinates
        coords.append(rest % extent)
        rest = rest // extent
    coords = coords[::-1]
    new_maps, new_grid, flat = [], [], tf.zeros_like(coords[0])
    for m, out, n, clip, c in zip(maps, out_grid, sizes, wide, coords, strict=True):
        new_maps.append(AxisMap(scale=1, offset=0, size=n) if clip else m)
        new_grid.append(1 if clip else out)
        flat = flat * new_grid[-1] + (tf.zeros_like(c) if clip else c)
    return tuple(new_maps), tuple(new_grid), flat


def extract_input_patches(
    images: tf.Tensor,
    maps: tuple[AxisMap, ...],
    out_grid: tuple[int, ...],
    positions: tf.Tensor,
) -> tf.Tensor:
    """The input-space patch of each sampled position: a crop of the model input, zeros outside.

    Args:
        images: The model input, ``(n, H, W, C)`` or ``(n, L, C)``.
        maps: One `AxisMap` per spatial axis (from `input_space_maps`; the caller handles None,
            meaning the whole image).
        out_grid: The layer's output grid size per spatial axis (row-major order of ``positions``).
        positions: ``(n, P)`` integer flat output positions.

    Returns:
        ``(n, P, *sizes, C)`` with ``sizes = clipped_sizes(maps, input sizes)`` (the box's size,
        or the whole input axis where the box is wider than the input); for ``maps == ()``
        (tabular) ``(n, 1, D)``.

    Example:
        >>> extract_input_patches(x, maps["conv2"], (8, 8), positions)  # (n, P, 14, 14, 1)
    """
    images = tf.convert_to_tensor(images)
    if not maps:
        return tf.reshape(images, [-1, 1, math.prod(images.shape[1:])])
    if len(maps) not in (1, 2) or images.shape.rank != len(maps) + 2 or len(out_grid) != len(maps):
        raise ValueError(
            f"extract_input_patches expects 1 or 2 spatial axes matching images and out_grid. "
            f"Received: {len(maps)} maps, out_grid={out_grid}, images of shape {images.shape}."
        )
    maps, out_grid, positions = clip_to_input(maps, out_grid, positions, images.shape[1:-1])
    # Bring each axis to exactly the span the boxes cover, [offset, scale*(out-1) + offset + size),
    # by cropping or zero-padding both ends; then the box of position q starts at scale*q.
    crops, pads = [slice(None)], [[0, 0]]
    for m, out, n in zip(maps, out_grid, images.shape[1:-1], strict=True):
        end = m.scale * (out - 1) + m.offset + m.size
        start, stop = max(m.offset, 0), max(min(end, n), max(m.offset, 0))
        crops.append(slice(start, stop))
        before = max(-m.offset, 0)
        pads.append([before, end - m.offset - before - (stop - start)])
    padded = tf.pad(images[tuple(crops)], pads + [[0, 0]])
    return _gather_windows(
        padded,
        out_grid,
        [m.scale for m in maps],
        [m.size for m in maps],
        [1] * len(maps),
        positions,
    )
