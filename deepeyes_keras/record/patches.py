"""TensorFlow ops that cut receptive fields out of tensors, for the compiled measurement.

`extract_windows` returns the neuronal receptive field of sampled output positions of a layer (the
window of the layer's input that its kernel reads) and `extract_input_patches` the input-space patch
(the box of the model input that can reach the position). Their geometry comes from
``deepeyes_keras/record/geometry.py``. Only static shapes are used, so both run inside a compiled
(also XLA) ``tf.function``.

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


def _as_image(x: tf.Tensor) -> tf.Tensor:
    return x[:, :, tf.newaxis, :] if x.shape.rank == 3 else x  # extract_patches needs 2-D grids


def _patches_at(patches: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """(n, H, W, D) patches, (n, P) flat row-major positions -> (n, P, D)."""
    depth = patches.shape[-1]
    flat = tf.reshape(patches, [tf.shape(patches)[0], -1, depth])
    return tf.gather(flat, tf.cast(positions, tf.int32), axis=1, batch_dims=1)


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
    # Pad explicitly, then take VALID patches: this reproduces 'same' and 'causal' convolutions
    # exactly, with the same zeros where the window crosses the border.
    pads = [[0, 0]] + [[w.pad_before, w.pad_after] for w in windows] + [[0, 0]]
    padded = _as_image(tf.pad(inputs, pads))
    wins = (*windows, AxisWindow(1, 1, 1, 0, 0, 1, 1))[:2]  # 1-D: a dummy 1-wide second axis
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
    return _patches_at(patches, positions)


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
    # by cropping or zero-padding both ends; then VALID patches with stride `scale` are the boxes.
    crops, pads = [slice(None)], [[0, 0]]
    for m, out, n in zip(maps, out_grid, images.shape[1:-1], strict=True):
        end = m.scale * (out - 1) + m.offset + m.size
        start, stop = max(m.offset, 0), max(min(end, n), max(m.offset, 0))
        crops.append(slice(start, stop))
        before = max(-m.offset, 0)
        pads.append([before, end - m.offset - before - (stop - start)])
    padded = _as_image(tf.pad(images[tuple(crops)], pads + [[0, 0]]))
    sizes = [m.size for m in maps] + [1] * (2 - len(maps))
    scales = [m.scale for m in maps] + [1] * (2 - len(maps))
    patches = tf.image.extract_patches(
        padded, sizes=[1, *sizes, 1], strides=[1, *scales, 1], rates=[1, 1, 1, 1], padding="VALID"
    )
    flat = _patches_at(patches, positions)
    return tf.reshape(flat, [tf.shape(flat)[0], -1, *sizes[: len(maps)], images.shape[-1]])
