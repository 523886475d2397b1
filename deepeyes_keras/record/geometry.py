"""Receptive-field geometry of Keras models, read from the model graph (no TensorFlow ops).

One receptive-field instance is an output position of a layer, for one image. Its *neuronal
receptive field* is the window of the layer's own input that the kernel reads (`layer_windows`, one
`AxisWindow` per spatial axis); its *input-space patch* is the box of the model input that can reach
it (`input_space_maps`, one `AxisMap` per spatial axis, found by one walk of the model's graph per
model input). Layers inside nested models (a backbone used as a layer) are named by paths,
``"backbone/block_1/conv"`` (`layer_paths`); a model with several inputs has one box per input the
layer depends on (`input_space_maps_by_input`). How each layer kind changes a box is in
``deepeyes_keras/record/geometry_layers.py`` (this module re-exports its public names) and is
described in ``viewer_site/reference/receptive-fields.md``; ``deepeyes_keras/record/patches.py``
cuts windows and patches out of tensors. Only ``channels_last`` is supported.

Example:
    >>> maps = input_space_maps(model)            # {"conv2": (AxisMap(2, 0, 14), ...), ...}
    >>> wins = layer_windows(conv2, conv2.input.shape)
    >>> wins[0].kernel, wins[0].out_size
    (5, 8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras

from deepeyes_keras.names import close_matches
from deepeyes_keras.record.geometry_layers import (
    AxisMap,
    AxisWindow,
    Maps,
    compose_maps,
    layer_windows,
    node_maps,
    union_maps,
)

__all__ = [
    "AxisMap",
    "AxisWindow",
    "Maps",
    "input_space_maps",
    "input_space_maps_by_input",
    "layer_paths",
    "layer_windows",
]


class _NoPath:
    """The value of a tensor that no path of the graph joins to the model input at hand."""

    def __repr__(self) -> str:
        return "NO_PATH"


_NO_PATH = _NoPath()
# Per model input: {layer name or path: maps or _NO_PATH}, and the maps of the model's outputs.
_Geometry = tuple[dict[str, object], list[object]]


def _is_graph_model(layer: object) -> bool:
    """True for a built Functional or Sequential model (a graph of layers we can walk)."""
    if not isinstance(layer, keras.Model):
        return False
    try:
        return bool(layer.inputs) and bool(layer.outputs)
    except (AttributeError, ValueError):  # subclassed models, unbuilt Sequential models
        return False


def _graph(model: keras.Model) -> tuple[list, list]:
    """The model's symbolic inputs and outputs, or a ValueError saying how to get them."""
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
    return inputs, outputs


def _identity(tensor: object) -> Maps:
    """The maps of a model input relative to itself: each position is its own pixel."""
    return (AxisMap(1, 0, 1),) * max(len(tensor.shape) - 2, 0)


def _nested(outer: list[object], inner: list[object]) -> object:
    """The maps, relative to the outer model's input, of a tensor of a nested model.

    Args:
        outer: Maps of the tensors fed to the nested model's inputs (at its first node).
        inner: Maps of the tensor relative to each of the nested model's inputs.
    """
    if len(outer) != len(inner):  # a call that does not match the nested model's inputs
        return _NO_PATH if all(m is _NO_PATH for m in outer) else None
    found = [
        compose_maps(o, i)
        for o, i in zip(outer, inner, strict=True)
        if o is not _NO_PATH and i is not _NO_PATH
    ]
    return union_maps(found) if found else _NO_PATH


def _static(model: keras.Model, shapes: tuple[tuple, ...]) -> keras.Model:
    """The nested model itself, or, when its inputs have spatial sizes unknown to it that the call
    fixes (a backbone built with ``input_shape=None``), a clone built on the call's shapes: the
    geometry needs static sizes and the clone's layers have the same names and configuration."""
    if [s[1:] for s in shapes] == [tuple(t.shape)[1:] for t in model.inputs]:
        return model
    try:
        inputs = [keras.Input(shape[1:]) for shape in shapes]
        return keras.models.clone_model(
            model, input_tensors=inputs[0] if len(inputs) == 1 else inputs
        )
    except Exception:  # a layer that cannot be cloned: its sizes stay unknown (a clear error)
        return model


def _walk(model: keras.Model, seed: int, cache: dict) -> _Geometry:
    """One walk of a model's graph: the maps of each layer (at its first node) and of each nested
    layer path, relative to input number ``seed`` (other inputs start with no path)."""
    inputs, outputs = _graph(model)
    tensor_maps: dict[int, object] = {
        id(t): _identity(t) if i == seed else _NO_PATH for i, t in enumerate(inputs)
    }
    first: dict[str, tuple[int, object, object, list[object], tuple]] = {}
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
            raise ValueError(f"Model '{model.name}' has a graph not connected to its inputs.")
        ins = [tensor_maps[id(t)] for t in node.input_tensors]
        shapes = tuple(tuple(t.shape) for t in node.input_tensors)
        if _is_graph_model(op):  # a nested model: chain its own input-to-output geometry
            inner = _model_geometry(op, cache, shapes)
            maps = [_nested(ins, [g[1][k] for g in inner]) for k in range(len(node.outputs))]
        else:
            used = [(s, m) for s, m in zip(shapes, ins, strict=True) if m is not _NO_PATH]
            out_shapes = [tuple(t.shape) for t in node.outputs]
            if used:
                maps = node_maps(op, [s for s, _ in used], out_shapes, [m for _, m in used])
            else:  # nothing here depends on this input
                maps = [_NO_PATH] * len(out_shapes)
        for out, m in zip(node.outputs, maps, strict=True):
            tensor_maps[id(out)] = m
        # Plain ops (keras.ops.relu) are not layers: they carry maps but are not reported.
        if isinstance(op, keras.layers.Layer):
            if node_index < first.get(op.name, (math.inf,))[0]:
                first[op.name] = (node_index, op, maps[0], ins, shapes)
    paths: dict[str, object] = {name: m for name, (_, _, m, _, _) in first.items()}
    for t in inputs:
        paths.setdefault(t._keras_history[0].name, tensor_maps[id(t)])
    for name, (_, op, _, ins, shapes) in first.items():
        if _is_graph_model(op):
            inner = _model_geometry(op, cache, shapes)
            for path, _ in layer_paths(op):
                paths[f"{name}/{path}"] = _nested(ins, [g[0].get(path) for g in inner])
    return paths, [tensor_maps[id(t)] for t in outputs]


def _model_geometry(
    model: keras.Model, cache: dict, shapes: tuple | None = None
) -> list[_Geometry]:
    """The geometry relative to each of the model's inputs, computed once per model (and per
    input shapes, for a nested model called on shapes more specific than its own)."""
    key = (id(model), shapes)
    if key not in cache:
        graph = model if shapes is None else _static(model, shapes)
        inputs, _ = _graph(graph)
        # The graph is kept with its geometry: the ids of its nested models stay unique.
        cache[key] = graph, [_walk(graph, seed, cache) for seed in range(len(inputs))]
    return cache[key][1]


def layer_paths(model: keras.Model) -> list[tuple[str, keras.layers.Layer]]:
    """Every layer of the model at any depth of nesting, named by its path.

    A layer of a Functional or Sequential model used as a layer (a backbone) is named
    ``"<nested model>/<layer>"``, recursively (``"outer_block/inner_block/conv"``). The order is
    depth first in the order of ``model.layers``: a nested model's own entry comes before the
    entries of its layers. InputLayers are left out at every depth. Subclassed models are one
    entry (their graph cannot be read).

    Args:
        model: A Keras model.

    Returns:
        ``[(path name, layer), ...]``; the names are those `input_space_maps` accepts.

    Example:
        >>> [p for p, _ in layer_paths(keras.Sequential([backbone, keras.layers.Dense(3)]))][:3]
        ['backbone', 'backbone/conv1', 'backbone/bn1']
    """
    found: list[tuple[str, keras.layers.Layer]] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        found.append((layer.name, layer))
        if _is_graph_model(layer):
            found.extend((f"{layer.name}/{path}", inner) for path, inner in layer_paths(layer))
    return found


def _names(model: keras.Model, known: dict[str, object], layer_names: Sequence[str] | None):
    """The requested names (the default list when None), checked against the known ones."""
    if layer_names is None:
        names = []
        for layer in model.layers:
            names.append(layer.name)
            if _is_graph_model(layer):
                names += [f"{layer.name}/{path}" for path, _ in layer_paths(layer)]
        return names
    unknown = [name for name in layer_names if name not in known]
    if unknown:
        hints = {n: close_matches(n, known) for n in unknown}
        shown = list(known)[:30]
        more = f" ... ({len(known)} in all, see layer_paths(model))" if len(known) > 30 else ""
        raise ValueError(
            f"Unknown layer names {unknown} for model '{model.name}'. Close matches: {hints}. "
            f"Layers inside nested models are named by path, e.g. 'backbone/conv1'. "
            f"Available layers: {shown}{more}."
        )
    return list(layer_names)


def _check_names_type(layer_names: object) -> None:
    if isinstance(layer_names, str):
        raise TypeError(f"layer_names must be a list of names. Received: {layer_names!r}.")


def input_space_maps(
    model: keras.Model, layer_names: Sequence[str] | None = None
) -> dict[str, tuple[AxisMap, ...] | None]:
    """The input-space box of every output grid position, per layer, relative to the model input.

    Values:
        * a tuple with one `AxisMap` per spatial axis of the layer's output grid;
        * ``()`` when the tensor has no spatial axes because the model input has none (a rank-2,
          tabular input): each sample is one position and its patch is the whole sample;
        * ``None`` when the grid is lost (Flatten, global pooling, Reshape, Dense after Flatten,
          UpSampling by a factor that does not divide the incoming scale, unknown layers): every
          output depends on the whole input image.

    Sliding-window layers compose (``scale *= stride``, ``offset -= scale*pad_before``,
    ``size += scale*(kernel-1)*dilation``); zero padding and cropping shift offsets; pointwise
    layers (activations, normalisation over channels, dropout) keep the grid; merge layers take the
    box holding all their inputs' boxes; UpSampling divides the scale. A layer used at several
    nodes is described at its first. A layer inside a nested model (a Functional or Sequential
    model used as a layer) is named by its path, ``"backbone/conv1"`` (see `layer_paths`); its box
    is its box in the nested model chained with the box of the tensor fed to the nested model
    (at the nested model's first call).

    Args:
        model: A built Sequential or Functional model with a single input (for several inputs,
            see `input_space_maps_by_input`).
        layer_names: Names or paths of the layers to describe. None: every layer of
            ``model.layers`` and, after each nested model, all its paths (depth first).

    Returns:
        ``{layer name: maps}`` in the order of ``model.layers`` (or of ``layer_names``).

    Raises:
        ValueError: If the model is unbuilt or has several inputs, a name is unknown, or a layer
            is channels_first.
        TypeError: If ``layer_names`` is a single string.

    Example:
        >>> input_space_maps(lenet)["conv2"]
        (AxisMap(scale=2, offset=0, size=14), AxisMap(scale=2, offset=0, size=14))
    """
    _check_names_type(layer_names)
    inputs, _ = _graph(model)
    if len(inputs) != 1:
        raise ValueError(
            f"Model '{model.name}' has {len(inputs)} inputs; input_space_maps describes "
            "single-input models only. Call input_space_maps_by_input(model) for each layer's "
            "boxes relative to each input it depends on."
        )
    paths, _ = _model_geometry(model, {})[0]
    maps = {name: paths.get(name) for name in _names(model, paths, layer_names)}
    return {name: None if m is _NO_PATH else m for name, m in maps.items()}


def input_space_maps_by_input(
    model: keras.Model, layer_names: Sequence[str] | None = None
) -> dict[str, dict[int, tuple[AxisMap, ...] | None]]:
    """Each layer's input-space boxes relative to each model input its output depends on.

    For a model with several inputs (an image and a tabular vector, two images), the box of a
    layer's output position is given separately for each input, as `input_space_maps` gives it
    for one: a tuple of `AxisMap` when the input's grid reaches the layer, ``()`` for a rank-2
    (tabular) input that reaches it without gaining a grid, None when the input reaches it only
    through a grid-losing path (it then depends on the whole of that input). An input with no
    path to the layer is absent from its dict. A merge joining two inputs' branches gives each
    input the box of its own branch.

    Args:
        model: A built Sequential or Functional model (any number of inputs).
        layer_names: Names or paths of the layers, as for `input_space_maps`.

    Returns:
        ``{layer name: {input position in model.inputs: maps}}``. For a single-input model this is
        ``{name: {0: input_space_maps(model)[name]}}`` for each layer that depends on the input.

    Raises:
        ValueError: If the model is unbuilt, a name is unknown, or a layer is channels_first.
        TypeError: If ``layer_names`` is a single string.

    Example:
        >>> input_space_maps_by_input(image_and_table)["conv1"]
        {0: (AxisMap(scale=1, offset=0, size=3), AxisMap(scale=1, offset=0, size=3))}
        >>> input_space_maps_by_input(image_and_table)["head"]
        {0: None, 1: ()}
    """
    _check_names_type(layer_names)
    geometry = _model_geometry(model, {})
    names = _names(model, geometry[0][0], layer_names)
    return {
        name: {
            k: m for k, (paths, _) in enumerate(geometry) if (m := paths.get(name)) is not _NO_PATH
        }
        for name in names
    }
