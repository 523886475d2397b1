"""Receptive-field geometry of Keras layers, read from the model graph (no TensorFlow ops).

One receptive-field instance is an output position of a layer, for one image. Its *neuronal
receptive field* is the window of the layer's own input that the kernel reads (`layer_windows`, one
`AxisWindow` per spatial axis); its *input-space patch* is the box of the model input that can reach
it (`input_space_maps`, one `AxisMap` per spatial axis, found by one walk of the model's graph).
``deepeyes_keras/record/patches.py`` cuts both out of tensors. Only ``channels_last`` is supported.

Example:
    >>> maps = input_space_maps(model)            # {"conv2": (AxisMap(2, 0, 14), ...), ...}
    >>> wins = layer_windows(conv2, conv2.input.shape)
    >>> wins[0].kernel, wins[0].out_size
    (5, 8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import keras

from deepeyes_keras.names import close_matches


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
    corners of the union of two branches' boxes).

    Attributes:
        scale: Input pixels between consecutive positions (the cumulative stride).
        offset: Input index where position 0 starts (negative when padding lies before).
        size: Width of the box in input pixels.
    """

    scale: int
    offset: int
    size: int


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


def _check_channels_last(layer: keras.layers.Layer) -> None:
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
    _check_channels_last(layer)
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
            "need static spatial sizes: give the model input a fixed shape, e.g. "
            "keras.Input((28, 28, 1))."
        )
    return int(size)


def _compose(outer: AxisMap, inner: AxisMap) -> AxisMap:
    """Chains two maps: ``inner`` maps a grid into the grid that ``outer`` maps into the input."""
    return AxisMap(
        scale=outer.scale * inner.scale,
        offset=outer.offset + outer.scale * inner.offset,
        size=outer.scale * (inner.size - 1) + outer.size,
    )


Maps = tuple[AxisMap, ...] | None


def _union(maps: list[Maps]) -> Maps:
    """The smallest box holding every input's box (merge layers); None if grids do not align."""
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


def _node_maps(op: object, node: object, in_maps: list[Maps]) -> list[Maps]:
    """The maps of one graph node's outputs, given the maps of its tensor inputs."""
    in_shapes = [tuple(t.shape) for t in node.input_tensors]
    out_shapes = [tuple(t.shape) for t in node.outputs]
    if isinstance(op, keras.Model):  # a nested model: chain its own input-to-output geometry
        inner = _graph_maps(op)[1] if len(op.inputs) == 1 else [None] * len(out_shapes)
        outer = in_maps[0] if len(in_maps) == 1 else None
        return [
            tuple(map(_compose, outer, m)) if outer and m and len(m) == len(outer) else None
            for m in inner
        ]
    # A tensor without spatial axes because the model input has none (tabular): its one position
    # is the whole sample, whatever the layer does, as long as no grid appears.
    if in_maps and all(m == () for m in in_maps) and all(len(s) == 2 for s in out_shapes):
        return [()] * len(out_shapes)
    if len(out_shapes) != 1:
        return [None] * len(out_shapes)
    rank = len(out_shapes[0])
    if isinstance(op, keras.layers.Layer):
        _check_channels_last(op)
    if isinstance(op, _CONV + _POOL + (keras.layers.Dense,)):
        windows = layer_windows(op, in_shapes[0])
        if in_maps[0] is None or len(windows) != len(in_maps[0]) or not windows:
            return [None]
        local = [AxisMap(w.stride, -w.pad_before, (w.kernel - 1) * w.dilation + 1) for w in windows]
        return [tuple(map(_compose, in_maps[0], local))]
    if isinstance(op, keras.layers.ZeroPadding1D | keras.layers.ZeroPadding2D):
        pads = [op.padding] if isinstance(op, keras.layers.ZeroPadding1D) else op.padding
        return [_shift(in_maps[0], [-p[0] for p in pads])]
    if isinstance(op, keras.layers.Cropping1D | keras.layers.Cropping2D):
        crops = [op.cropping] if isinstance(op, keras.layers.Cropping1D) else op.cropping
        return [_shift(in_maps[0], [c[0] for c in crops])]
    if isinstance(op, _MERGE):
        if isinstance(op, keras.layers.Concatenate) and not _acts_on_channels(op, rank):
            return [None]
        return [_union(in_maps)]
    if isinstance(op, _POINTWISE) and _acts_on_channels(op, rank):
        return [in_maps[0]] if len(in_maps) == 1 else [None]
    module = type(op).__module__
    if (
        module.startswith(("keras.src.ops", "keras.src.activations"))
        and type(op).__name__.lower() in _ELEMENTWISE_OPS
    ):
        # Broadcast operands without the full grid (e.g. a per-channel gate) have map None.
        return [_union(in_maps)]
    return [None]  # the grid is lost or unknown: the position depends on the whole input


def _shift(maps: Maps, shifts: list[int]) -> Maps:
    if maps is None or len(maps) != len(shifts):
        return None
    return tuple(
        AxisMap(m.scale, m.offset + m.scale * s, m.size) for m, s in zip(maps, shifts, strict=True)
    )


def _graph_maps(model: keras.Model) -> tuple[dict[str, Maps], list[Maps]]:
    """Walks a model's graph once: maps of each layer's output (first node) and of the outputs."""
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built yet. Build it first: add keras.Input(shape) as its "
            "first layer, or call model.build((None, *input_shape)) before passing it."
        )
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"Model '{model.name}' has no symbolic inputs ({error}). Only Sequential and "
            "Functional models are supported; build them with keras.Input(shape) or model.build()."
        ) from error
    if len(inputs) != 1:
        raise ValueError(
            f"Model '{model.name}' has {len(inputs)} inputs; receptive fields are supported only "
            "for single-input models."
        )
    spatial = len(inputs[0].shape) - 2
    tensor_maps: dict[int, Maps] = {id(inputs[0]): (AxisMap(1, 0, 1),) * spatial}
    first_node: dict[str, tuple[int, Maps]] = {}
    # Iterative post-order walk from the outputs (deep models would overflow Python's recursion).
    stack = [(t, False) for t in reversed(outputs)]
    while stack:
        tensor, ready = stack.pop()
        if id(tensor) in tensor_maps:
            continue
        op, node_index, _ = tensor._keras_history
        node = op._inbound_nodes[node_index]
        missing = [t for t in node.input_tensors if id(t) not in tensor_maps]
        if missing and not ready:
            stack.append((tensor, True))
            stack.extend((t, False) for t in missing)
            continue
        if missing:  # a tensor not connected to the model input
            raise ValueError(f"Model '{model.name}' has a graph not connected to its input.")
        maps = _node_maps(op, node, [tensor_maps[id(t)] for t in node.input_tensors])
        for out, m in zip(node.outputs, maps, strict=True):
            tensor_maps[id(out)] = m
        # Plain ops (keras.ops.relu) are not layers: they carry maps but are not reported.
        if isinstance(op, keras.layers.Layer):
            if node_index < first_node.get(op.name, (math.inf,))[0]:
                first_node[op.name] = (node_index, maps[0])
    first_node.setdefault(inputs[0]._keras_history[0].name, (0, tensor_maps[id(inputs[0])]))
    layer_maps = {name: m for name, (_, m) in first_node.items()}
    return layer_maps, [tensor_maps[id(t)] for t in outputs]


def input_space_maps(
    model: keras.Model, layer_names: Sequence[str] | None = None
) -> dict[str, tuple[AxisMap, ...] | None]:
    """The input-space box of every output grid position, per layer, relative to the model input.

    Values:
        * a tuple with one `AxisMap` per spatial axis of the layer's output grid;
        * ``()`` when the tensor has no spatial axes because the model input has none (a rank-2,
          tabular input): each sample is one position and its patch is the whole sample;
        * ``None`` when the grid is lost (Flatten, global pooling, Reshape, Dense after Flatten,
          unknown layers): every output depends on the whole input image.

    Sliding-window layers compose (``scale *= stride``, ``offset -= scale*pad_before``,
    ``size += scale*(kernel-1)*dilation``); zero padding and cropping shift offsets; pointwise
    layers (activations, normalisation over channels, dropout) keep the grid; merge layers take the
    box holding all their inputs' boxes. A layer used at several nodes is described at its first.

    Args:
        model: A built Sequential or Functional model with a single input.
        layer_names: Names of the layers to describe; all layers when None.

    Returns:
        ``{layer name: maps}`` in the order of ``model.layers`` (or of ``layer_names``).

    Raises:
        ValueError: If the model is unbuilt or multi-input, a name is unknown, or a layer is
            channels_first.
        TypeError: If ``layer_names`` is a single string.

    Example:
        >>> input_space_maps(lenet)["conv2"]
        (AxisMap(scale=2, offset=0, size=14), AxisMap(scale=2, offset=0, size=14))
    """
    if isinstance(layer_names, str):
        raise TypeError(f"layer_names must be a list of names. Received: {layer_names!r}.")
    layer_maps, _ = _graph_maps(model)
    names = [layer.name for layer in model.layers]
    if layer_names is None:
        return {name: layer_maps.get(name) for name in names}
    known = list(layer_maps)
    unknown = [name for name in layer_names if name not in layer_maps]
    if unknown:
        hints = {n: close_matches(n, known) for n in unknown}
        raise ValueError(
            f"Unknown layer names {unknown} for model '{model.name}'. Close matches: {hints}. "
            f"Available layers: {known}."
        )
    return {name: layer_maps[name] for name in layer_names}
