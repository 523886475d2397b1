"""The analysed layers as the recorder sees them: shapes, instances, descriptors and the tap model.

A :class:`LayerTap` holds the static facts of one analysed layer, computed once from the built
model: what one instance is, what its neuronal receptive field (the *descriptor*) holds, which
model input its input-space patch is cut from, and how large the stored columns are.
:func:`tap_model` builds the one cached sub-model that returns the input and output of every
analysed layer, also of layers inside nested models (a backbone used as a layer), which Keras
only lets a model reach through the nested model's own graph.

Definitions beyond the paper (``viewer_site/reference/architectures.md`` tells them in full):

* **Recurrent layers** (``LSTM``, ``GRU``, ``SimpleRNN``, ``Bidirectional``): with
  ``return_sequences=True`` an instance is one time step of the output sequence and its neuronal
  receptive field is what that step reads, the input at that step and the layer's own previous
  output (its state; for ``Bidirectional`` both neighbouring outputs). With
  ``return_sequences=False`` an instance is the final output, which reads the whole input sequence.
* **Long descriptors** (more than ``DESCRIPTOR_DIM`` values, e.g. a 3x3 window of 512 channels)
  are stored as a seeded signed hash of their values into ``DESCRIPTOR_DIM`` buckets (a sparse
  random projection that keeps distances, hence neighbourhoods, in expectation); the maps reduce
  descriptors to 50 principal components anyway.
* **Input-space patches** are stored at most ``PATCH_MAX_SIDE`` pixels a side (area-resized): the
  thumbnails never draw more, and the memory no longer grows with the receptive field.

Example:
    >>> taps = [LayerTap(i, name, layer, sources) for i, (name, layer) in enumerate(chosen)]
    >>> model = tap_model(keras_model, taps)       # [in_0, out_0, in_1, out_1, ...]
"""

from __future__ import annotations

from collections import defaultdict

import keras
import numpy as np
import tensorflow as tf

from deepeyes_keras.record.geometry import AxisWindow, layer_windows

# Stored descriptor length: longer neuronal receptive fields are hashed down to it (see above).
DESCRIPTOR_DIM = 1024
# Longest stored side of a 2-D input-space patch, and longest stored 1-D patch, in input pixels.
PATCH_MAX_SIDE = 32
PATCH_MAX_LENGTH = 256

RECURRENT_TYPES = (
    keras.layers.LSTM,
    keras.layers.GRU,
    keras.layers.SimpleRNN,
    keras.layers.RNN,
    keras.layers.Bidirectional,
)


def first_tensor(value):
    """A layer's first output (recurrent layers with ``return_state`` return several)."""
    return value[0] if isinstance(value, list | tuple) else value


def _recurrent_options(layer) -> dict | None:
    if not isinstance(layer, RECURRENT_TYPES):
        return None
    inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer
    return {
        "bidirectional": isinstance(layer, keras.layers.Bidirectional),
        "go_backwards": bool(getattr(inner, "go_backwards", False)),
        "return_sequences": bool(getattr(layer, "return_sequences", False)),
    }


class LayerTap:
    """Static facts about one analysed layer, computed once from the built model.

    Args:
        index: position among the analysed layers (its run-directory key is ``L<index>``).
        name: the layer's name; ``outer/inner`` for a layer inside a nested model.
        layer: the Keras layer.
        sources: per position in ``model.inputs`` of an input the layer depends on, the layer's
            input-space maps relative to it (``input_space_maps_by_input``).
        input_shapes: every model input's shape without the batch axis.
        shapes: the layer's ``(input shape, output shape)`` where it is tapped (``tap_tensors``);
            by default its own, which inside a backbone built without an input shape are unknown.

    Attributes:
        in_shape, out_shape: the layer's input and (first) output shapes, batch axis first.
        windows: the window per grid axis that one instance reads (``layer_windows``).
        grid: output positions per axis; ``()`` when one instance is the whole output.
        n_filters: channels (conv), units (dense, recurrent).
        raw_descriptor_size: values in one neuronal receptive field.
        descriptor_size: values stored per instance (``DESCRIPTOR_DIM`` at most).
        patch_input: position of the model input the patch is cut from (the first image input
            among the sources, else the first source), None when the layer depends on no input.
        space_map: the input-space box per spatial axis of ``patch_input``; None or ``()`` when
            the patch is that whole input.
        recurrent: for a recurrent layer, its ``bidirectional``, ``go_backwards`` and
            ``return_sequences``; None otherwise.
    """

    def __init__(self, index: int, name: str, layer, sources: dict, input_shapes, shapes=None):
        self.index = index
        self.layer = layer
        self.name = name
        if shapes is None:
            shapes = (first_tensor(layer.input).shape, first_tensor(layer.output).shape)
        in_shape, out_shape = (tuple(s) for s in shapes)
        if any(s is None for s in in_shape[1:] + out_shape[1:]):
            raise ValueError(
                f"Layer {name!r} has an unknown dimension (input {in_shape}, output "
                f"{out_shape}); DeepEyes needs static shapes. Give keras.Input a full shape "
                "(also the sequence length of a recurrent network)."
            )
        self.in_shape, self.out_shape = in_shape, out_shape
        self.n_filters = int(out_shape[-1])
        self.recurrent = _recurrent_options(layer)
        if self.recurrent is not None:
            self._init_recurrent()
        else:
            self.windows = layer_windows(layer, in_shape)
            self.grid = tuple(int(s) for s in out_shape[1:-1])
            self.raw_descriptor_size = (
                int(np.prod(in_shape[1:]))
                if not self.grid
                else int(np.prod([w.kernel for w in self.windows])) * int(in_shape[-1])
            )
        self.descriptor_size = min(self.raw_descriptor_size, DESCRIPTOR_DIM)
        self.sources = tuple(sorted(sources))
        shapes = [tuple(s) for s in input_shapes]
        images = [i for i in self.sources if len(shapes[i]) >= 2]
        self.patch_input = (images or list(self.sources) or [None])[0]
        self.space_map = None if self.patch_input is None else sources[self.patch_input]
        self.patch_input_shape = () if self.patch_input is None else shapes[self.patch_input]

    def _init_recurrent(self) -> None:
        steps, features = int(self.in_shape[1]), int(np.prod(self.in_shape[2:]))
        if self.recurrent["return_sequences"]:
            neighbours = 2 if self.recurrent["bidirectional"] else 1
            self.grid = (steps,)
            self.windows = (AxisWindow(1, 1, 1, 0, 0, steps, steps),)
            self.raw_descriptor_size = features + neighbours * self.n_filters
        else:
            self.grid, self.windows = (), ()
            self.raw_descriptor_size = steps * features

    @property
    def kind(self) -> str:
        """``"dense"``, ``"conv2d"``, ``"conv1d"`` or ``"recurrent"``."""
        if self.recurrent is not None:
            return "recurrent"
        if isinstance(self.layer, keras.layers.Dense):
            return "dense"
        return "conv2d" if len(self.grid) == 2 else "conv1d"

    @property
    def projected(self) -> bool:
        """Whether descriptors are hashed down to ``DESCRIPTOR_DIM`` values."""
        return self.raw_descriptor_size > DESCRIPTOR_DIM

    def patch_shape(self) -> tuple[int, ...]:
        """Shape of one stored input-space patch (``()`` when the layer depends on no input)."""
        shape = self.patch_input_shape
        if not shape:
            return ()
        if len(shape) == 1:  # a tabular input: the whole vector
            return shape
        spatial = shape[:-1]
        if self.space_map:
            spatial = tuple(
                min(m.size, int(n)) for m, n in zip(self.space_map, spatial, strict=True)
            )
        return stored_patch_sizes(spatial) + (shape[-1],)

    def neuronal_input(self, layer_in: tf.Tensor, layer_out: tf.Tensor) -> tf.Tensor:
        """The tensor whose ``windows`` are the descriptors (the layer input, except recurrent)."""
        if self.recurrent is None or not self.recurrent["return_sequences"]:
            return layer_in
        k, steps = tf.shape(layer_in)[0], int(self.in_shape[1])
        x = tf.reshape(layer_in, [k, steps, -1])
        if self.recurrent["go_backwards"] and not self.recurrent["bidirectional"]:
            x = tf.reverse(x, axis=[1])  # output step t read input step T-1-t
        zero = tf.zeros_like(layer_out[:, :1])
        parts = [x, tf.concat([zero, layer_out[:, :-1]], axis=1)]  # the output before step t
        if self.recurrent["bidirectional"]:
            parts.append(tf.concat([layer_out[:, 1:], zero], axis=1))  # and after it
        return tf.concat(parts, axis=-1)

    def project(self, descriptors: tf.Tensor) -> tf.Tensor:
        """``(m, raw)`` descriptors to ``(m, descriptor_size)`` (a seeded signed hash if long)."""
        if not self.projected:
            return descriptors
        raw, dim = self.raw_descriptor_size, self.descriptor_size
        bucket, sign = hash_projection(raw, dim, seed=1_000_003 + self.index)
        # Each value goes to one bucket with a random sign: distances are kept in expectation.
        summed = tf.math.unsorted_segment_sum(
            tf.transpose(descriptors) * tf.constant(sign)[:, None], tf.constant(bucket), dim
        )
        return tf.transpose(summed)


def hash_projection(raw: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The bucket (``0..dim-1``) and sign (+-1) of each of ``raw`` descriptor values."""
    rng = np.random.default_rng(seed)
    # Balanced buckets (each gets raw/dim values, up to one), in a random order.
    bucket = rng.permutation(np.arange(raw) % dim).astype(np.int32)
    sign = rng.choice(np.array([-1.0, 1.0], np.float32), size=raw)
    return bucket, sign


def stored_patch_sizes(spatial) -> tuple[int, ...]:
    """Stored size per spatial axis of a patch of size ``spatial``, keeping its aspect ratio."""
    spatial = tuple(int(s) for s in spatial)
    cap = PATCH_MAX_SIDE if len(spatial) >= 2 else PATCH_MAX_LENGTH
    longest = max(spatial) if spatial else 0
    if longest <= cap:
        return spatial
    return tuple(max(1, round(s * cap / longest)) for s in spatial)


def shrink_patches(patches: tf.Tensor, target: tuple[int, ...]) -> tf.Tensor:
    """``(m, *spatial, C)`` patches area-resized to ``target`` spatial sizes (no-op if equal)."""
    spatial = tuple(int(s) for s in patches.shape[1:-1])
    if spatial == tuple(target):
        return patches
    image = patches[:, :, None, :] if len(spatial) == 1 else patches
    size = tuple(target) + ((1,) if len(spatial) == 1 else ())
    out = tf.image.resize(image, size, method="area")
    return out[:, :, 0, :] if len(spatial) == 1 else out


def tap_tensors(model: keras.Model, names: list[str]) -> dict[str, tuple]:
    """``{name: (input tensor, output tensor)}`` of each named layer, reachable from the inputs."""
    return _tensors(model, list(names))


def tap_model(model: keras.Model, taps: list[LayerTap], pairs: dict | None = None) -> keras.Model:
    """One sub-model from the model inputs to ``[input, output]`` of every tap, in tap order."""
    pairs = pairs or _tensors(model, [tap.name for tap in taps])
    outputs = []
    for tap in taps:
        outputs += list(pairs[tap.name])
    return keras.Model(model.inputs, outputs, name="deepeyes_taps")


def _tensors(model: keras.Model, names: list[str]) -> dict[str, tuple]:
    """``{name: (input tensor, output tensor)}`` of each named layer, in ``model``'s graph.

    A name ``outer/inner`` is a layer of the nested model ``outer``: a probe model from the nested
    model's inputs to the inner tensors is called on the tensors that feed ``outer`` (its first
    call) in this graph, so the result is reachable from ``model.inputs``.
    """
    out, nested = {}, defaultdict(list)
    for name in names:
        head, sep, rest = name.partition("/")  # Keras layer names never hold a slash
        if sep:
            nested[head].append(rest)
        else:
            layer = model.get_layer(name)
            out[name] = (first_tensor(layer.input), first_tensor(layer.output))
    for head, rests in nested.items():
        inner = model.get_layer(head)
        if not isinstance(inner, keras.Model) or not inner._inbound_nodes:
            raise ValueError(
                f"Layer {head!r} of model {model.name!r} is not a nested model that the model "
                f"calls, so {head + '/' + rests[0]!r} cannot be reached."
            )
        inner_pairs = _tensors(inner, rests)
        # The first call of the nested model inside this model's graph.
        node = next(
            (n for n in inner._inbound_nodes if _in_graph(model, n)), inner._inbound_nodes[-1]
        )
        args = list(node.input_tensors)
        # A tensor that is one of the nested model's own inputs is the tensor fed to it here; the
        # others come out of the probe (a model cannot return its input as a computed output).
        fed = {id(t): a for t, a in zip(inner.inputs, args, strict=False)}
        wanted = [t for rest in rests for t in inner_pairs[rest] if id(t) not in fed]
        computed = {}
        if wanted:
            probe = keras.Model(inner.inputs, wanted, name=f"deepeyes_probe_{len(out)}_{head}")
            results = probe(args[0] if len(args) == 1 else args)
            results = list(results) if isinstance(results, list | tuple) else [results]
            computed = {id(t): r for t, r in zip(wanted, results, strict=True)}
        for rest in rests:
            out[f"{head}/{rest}"] = tuple(
                fed.get(id(t)) if id(t) in fed else computed[id(t)] for t in inner_pairs[rest]
            )
    return out


def _in_graph(model, node) -> bool:
    """Whether a node's input tensors belong to ``model``'s graph (reached from its inputs)."""
    ids = {id(t) for t in model.inputs}
    for layer in model.layers:
        for n in layer._inbound_nodes:
            ids.update(id(t) for t in n.outputs)
    return all(id(t) in ids for t in node.input_tensors)


__all__ = [
    "DESCRIPTOR_DIM",
    "PATCH_MAX_SIDE",
    "PATCH_MAX_LENGTH",
    "RECURRENT_TYPES",
    "LayerTap",
    "first_tensor",
    "hash_projection",
    "shrink_patches",
    "stored_patch_sizes",
    "tap_model",
    "tap_tensors",
]
