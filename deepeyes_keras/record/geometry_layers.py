"""How one Keras layer changes receptive-field geometry, read from its configuration (no TF ops).

`layer_windows` gives a sliding-window layer's kernel window (one `AxisWindow` per spatial axis);
`node_maps` gives the input-space box (one `AxisMap` per spatial axis) of a graph node's outputs
from the boxes of its inputs. The walk over a whole model (nested models, several inputs) is in
``deepeyes_keras/record/geometry.py``, which re-exports the public names of this module. Only
``channels_last`` is supported. The layer kinds and their rules are described in
``viewer_site/reference/receptive-fields.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class AxisWindow:
    """One spatial axis of a sliding-window layer (convolution, pooling, per-position dense).

    Output position ``i`` reads the layer-input indices ``i*stride - pad_before + d*dilation`` for
    ``d = 0..kernel-1``; indices outside ``[0, in_size)`` are padding (zeros).

    Attributes:
        kernel, stride, dilation: Kernel (or pool) size, step between outputs, step between taps.
        pad_before, pad_after: Zeros added on each side, exactly as TensorFlow does for the padding.
        in_size, out_size: Lengths of the layer input and output along the axis.
    """

    kernel: int
    stride: int
    dilation: int
    pad_before: int
    pad_after: int
    in_size: int
    out_size: int


@dataclass(frozen=True)
class AxisMap:
    """Where grid position ``x`` of a tensor lies in the model input, along one spatial axis.

    Position ``x`` covers the model-input indices ``[scale*x + offset, scale*x + offset + size-1]``.
    It is a bounding box: it may reach outside the input because of padding, and not every pixel in
    it need reach the position (holes between dilated taps, taps or positions that are pure padding,
    corners of the union of two branches' boxes, the positions of an upsampled grid that read the
    neighbouring input position).

    Attributes:
        scale: Input pixels between consecutive positions (the cumulative stride).
        offset: Input index where position 0 starts (negative when padding lies before).
        size: Width of the box in input pixels.
    """

    scale: int
    offset: int
    size: int


# Per spatial axis of a tensor's grid; () for a tensor without spatial axes from a tabular input;
# None when the grid is lost (each position depends on the whole input).
Maps = tuple[AxisMap, ...] | None


def _layers(names: str) -> tuple[type, ...]:
    return tuple(getattr(keras.layers, name) for name in names.split())


_CONV = _layers("Conv1D Conv2D DepthwiseConv1D DepthwiseConv2D SeparableConv1D SeparableConv2D")
_POOL = _layers("MaxPooling1D MaxPooling2D AveragePooling1D AveragePooling2D")
_MERGE = _layers("Add Subtract Multiply Average Maximum Minimum Concatenate")
# Layers that act on each grid position separately (or are the identity at inference), so they keep
# the grid of their input. Those with an `axis` are checked to act on channels only.
_POINTWISE = _layers(
    "InputLayer Activation ReLU LeakyReLU PReLU ELU Softmax BatchNormalization LayerNormalization "
    "UnitNormalization Normalization Rescaling Identity Dropout SpatialDropout1D SpatialDropout2D "
    "GaussianNoise GaussianDropout AlphaDropout ActivityRegularization"
)
# Plain Keras ops applied to symbolic tensors in a Functional model (`keras.ops.relu(x)`, `x + y`)
# appear as non-Layer operations; these act elementwise, so they pass or merge grids like layers do.
_ELEMENTWISE_OPS = frozenset(
    "add subtract multiply divide truedivide maximum minimum power abs absolute negative square "
    "sqrt exp log tanh sigmoid relu relu6 leakyrelu elu selu celu gelu silu swish softplus "
    "softsign hardsigmoid hardsilu hardswish mish clip cast".split()
)


def check_channels_last(layer: keras.layers.Layer) -> None:
    """Raises a ValueError naming the layer if it is not ``channels_last``."""
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt != "channels_last":
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) uses data_format='{fmt}'. "
            "deepeyes_keras supports only data_format='channels_last'. Build the model with "
            "data_format='channels_last' (the Keras default) on this layer, or call "
            "keras.config.set_image_data_format('channels_last') before creating the model."
        )


def _axis_window(kernel: int, stride: int, dilation: int, padding: str, in_size: int) -> AxisWindow:
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        before = after = 0
        out = (in_size - span) // stride + 1
    else:  # 'same' and 'causal' both give ceil(in / stride) positions
        out = -(-in_size // stride)
        if padding == "causal":  # Keras pads the left side only, then runs a 'valid' conv
            before, after = span - 1, 0
        else:  # TensorFlow's 'SAME': the odd extra zero goes after
            total = max((out - 1) * stride + span - in_size, 0)
            before, after = total // 2, total - total // 2
    return AxisWindow(kernel, stride, dilation, before, after, in_size, out)


def layer_windows(
    layer: keras.layers.Layer, input_shape: Sequence[int | None]
) -> tuple[AxisWindow, ...] | None:
    """The kernel window of a sliding-window layer, one `AxisWindow` per spatial axis.

    Args:
        layer: A Keras layer.
        input_shape: The layer's full input shape with the batch axis, e.g. ``(None, 28, 28, 1)``.

    Returns:
        One window per spatial axis for Conv1D/2D (also depthwise, separable) and Max/Average
        pooling 1D/2D. For Dense: ``()`` on a rank-2 input (the whole vector is the window), else a
        1-wide window per middle axis (Dense acts per position). ``None`` for any other layer: it
        has no kernel window (`input_space_maps` says how it changes the grid).

    Raises:
        ValueError: If the layer is channels_first, or a spatial input size is unknown.

    Example:
        >>> layer_windows(keras.layers.Conv2D(8, 3, strides=2), (None, 28, 28, 1))[0].out_size
        13
    """
    shape = tuple(input_shape)
    if isinstance(layer, keras.layers.Dense):
        return tuple(_axis_window(1, 1, 1, "valid", _known(layer, s)) for s in shape[1:-1])
    if not isinstance(layer, _CONV + _POOL):
        return None
    check_channels_last(layer)
    # Keras stores kernel_size / pool_size as one int per spatial axis.
    if isinstance(layer, _CONV):
        kernel, dilation = tuple(layer.kernel_size), tuple(layer.dilation_rate)
    else:
        kernel, dilation = tuple(layer.pool_size), (1,) * len(layer.pool_size)
    rank = len(kernel)
    if len(shape) != rank + 2:
        raise ValueError(
            f"Layer '{layer.name}' expects a rank-{rank + 2} input. Received: input_shape={shape}."
        )
    strides = tuple(layer.strides)
    padding = layer.padding.lower()
    return tuple(
        _axis_window(k, s, d, padding, _known(layer, n))
        for k, s, d, n in zip(kernel, strides, dilation, shape[1:-1], strict=True)
    )


def _known(layer: keras.layers.Layer, size: int | None) -> int:
    if size is None:
        raise ValueError(
            f"Layer '{layer.name}' has an input with an unknown spatial size. Receptive fields "
            "need static spatial sizes: give the model input (and any nested model's input) a "
            "fixed shape, e.g. keras.Input((28, 28, 1)) or input_shape=(28, 28, 1)."
        )
    return int(size)


def _compose(outer: AxisMap, inner: AxisMap) -> AxisMap:
    return AxisMap(
        scale=outer.scale * inner.scale,
        offset=outer.offset + outer.scale * inner.offset,
        size=outer.scale * (inner.size - 1) + outer.size,
    )


def compose_maps(outer: Maps, inner: Maps) -> Maps:
    """Chains two boxes: ``inner`` maps a grid into the grid that ``outer`` maps into the input.

    None (on either side) or a different number of axes gives None: the whole input.
    """
    if outer is None or inner is None or len(outer) != len(inner):
        return None
    return tuple(map(_compose, outer, inner))


def union_maps(maps: Sequence[Maps]) -> Maps:
    """The smallest box holding every box (the same position reached along several paths).

    None if any is None, or if the grids do not align (different axes or scales).
    """
    if not maps or any(m is None for m in maps) or len({len(m) for m in maps}) != 1:
        return None
    out = []
    for axis in zip(*maps, strict=True):
        if len({a.scale for a in axis}) != 1:
            return None
        start = min(a.offset for a in axis)
        end = max(a.offset + a.size for a in axis)
        out.append(AxisMap(axis[0].scale, start, end - start))
    return tuple(out)


def _acts_on_channels(op: object, rank: int) -> bool:
    axis = getattr(op, "axis", -1)
    axes = axis if isinstance(axis, list | tuple) else [axis]
    return all(a in (-1, rank - 1) for a in axes)


def _shift(maps: Maps, shifts: list[int]) -> Maps:
    if maps is None or len(maps) != len(shifts):
        return None
    return tuple(
        AxisMap(m.scale, m.offset + m.scale * s, m.size) for m, s in zip(maps, shifts, strict=True)
    )


def _upsample(maps: Maps, factors: Sequence[int], interpolation: str) -> Maps:
    """UpSampling1D/2D: output ``x`` reads input ``q = x // f`` (nearest); bilinear (TensorFlow's
    half-pixel centres) also reads ``q - 1`` or ``q + 1``, the one nearer ``x``.

    With an incoming scale ``s`` that ``f`` divides, ``s2 = s // f`` and residue ``r = x % f``:
    the box of ``q`` starts at ``s2*x + offset - s2*r`` (``r = 0..f-1``), so the box holding every
    residue's is ``AxisMap(s2, offset - s2*(f-1), size + s2*(f-1))`` (nearest); bilinear widens it
    by the neighbours. ``f`` not dividing ``s`` gives None: no box of integer scale fits.
    """
    if maps is None or len(maps) != len(factors) or interpolation not in ("nearest", "bilinear"):
        return None
    out = []
    for m, f in zip(maps, factors, strict=True):
        if m.scale % f:
            return None
        s2 = m.scale // f
        if interpolation == "nearest" or f == 1:
            out.append(AxisMap(s2, m.offset - s2 * (f - 1), m.size + s2 * (f - 1)))
            continue
        # Bilinear: residue r reads q-1 when 2r+1 <= f and q+1 when 2r+1 >= f (both at equality,
        # where float rounding may give the neighbour a tiny weight).
        start = min(m.offset - s2 * (f - 1), m.offset - m.scale - s2 * ((f - 1) // 2))
        end = m.offset + m.size + m.scale - s2 * (f // 2)
        out.append(AxisMap(s2, start, end - start))
    return tuple(out)


def _merge(in_shapes: list[tuple], out_shape: tuple, in_maps: list[Maps]) -> Maps:
    """A merge or elementwise op: the union, unless an operand is broadcast along the grid (one
    of its positions then reaches every output position: the whole input)."""
    if any(len(s) != len(out_shape) or s[1:-1] != out_shape[1:-1] for s in in_shapes):
        return None
    return union_maps(in_maps)


def node_maps(
    op: object, in_shapes: list[tuple], out_shapes: list[tuple], in_maps: list[Maps]
) -> list[Maps]:
    """The boxes of one graph node's outputs, from the boxes of the inputs they depend on.

    Args:
        op: The node's operation: a Keras layer, or a plain op (``keras.ops.relu``, ``x + y``).
            Nested models are the caller's to handle.
        in_shapes: Shapes of the node's tensor inputs that depend on the model input at hand.
        out_shapes: Shapes of the node's outputs.
        in_maps: The boxes of those inputs (same order as ``in_shapes``, at least one).

    Returns:
        One box per output; None for what is not understood (never a too-small box).

    Raises:
        ValueError: If a layer is channels_first or a sliding-window input size is unknown.
    """
    # A tensor without spatial axes because the model input has none (tabular): its one position
    # is the whole sample, whatever the layer does, as long as no grid appears.
    if all(m == () for m in in_maps) and all(len(s) == 2 for s in out_shapes):
        return [()] * len(out_shapes)
    if len(out_shapes) != 1:
        return [None] * len(out_shapes)
    out_shape, rank = out_shapes[0], len(out_shapes[0])
    if isinstance(op, keras.layers.Layer):
        check_channels_last(op)
    if isinstance(op, _MERGE):
        if isinstance(op, keras.layers.Concatenate) and not _acts_on_channels(op, rank):
            return [None]
        return [_merge(in_shapes, out_shape, in_maps)]
    module = type(op).__module__
    if (
        module.startswith(("keras.src.ops", "keras.src.activations"))
        and type(op).__name__.lower() in _ELEMENTWISE_OPS
    ):
        return [_merge(in_shapes, out_shape, in_maps)]
    if len(in_maps) != 1:
        return [None]
    (maps,) = in_maps
    if isinstance(op, _CONV + _POOL + (keras.layers.Dense,)):
        windows = layer_windows(op, in_shapes[0])
        if maps is None or len(windows) != len(maps) or not windows:
            return [None]
        local = [AxisMap(w.stride, -w.pad_before, (w.kernel - 1) * w.dilation + 1) for w in windows]
        return [tuple(map(_compose, maps, local))]
    if isinstance(op, keras.layers.ZeroPadding1D | keras.layers.ZeroPadding2D):
        pads = [op.padding] if isinstance(op, keras.layers.ZeroPadding1D) else op.padding
        return [_shift(maps, [-p[0] for p in pads])]
    if isinstance(op, keras.layers.Cropping1D | keras.layers.Cropping2D):
        crops = [op.cropping] if isinstance(op, keras.layers.Cropping1D) else op.cropping
        return [_shift(maps, [c[0] for c in crops])]
    if isinstance(op, keras.layers.UpSampling1D):
        return [_upsample(maps, [int(op.size)], "nearest")]
    if isinstance(op, keras.layers.UpSampling2D):
        return [_upsample(maps, [int(f) for f in op.size], op.interpolation)]
    if isinstance(op, _POINTWISE) and _acts_on_channels(op, rank):
        return [maps]
    return [None]  # the grid is lost or unknown: the position depends on the whole input
