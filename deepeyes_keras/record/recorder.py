"""Recording the analysed layers while the model trains.

A :class:`LayerTap` holds the static facts of one analysed layer (the layers are chosen by
``deepeyes_keras/record/selection.py``). :class:`Recorder` owns one cached sub-model that taps
the input and output of every analysed layer, and the statistics and reservoir of each layer.
:meth:`Recorder.capture` is the handful of graph ops added to the model's ``train_step`` (count the
step, keep a few random images of the batch); :meth:`Recorder.measure`, a separate compiled
function run on sampled steps, runs the tap model on them, samples receptive-field positions,
updates the statistics and offers the instances to the reservoir. :meth:`Recorder.read` copies the
state to NumPy for a snapshot (``deepeyes_keras/record/snapshot.py``).

Example:
    >>> layers, skipped = resolve_layers(model, ["conv1", "fc1"])   # doctest: +SKIP
    >>> recorder = Recorder(model, layers, images_per_step=16, positions_per_image=10,
    ...                     reservoir_size=2000, n_labels=10, seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from deepeyes_keras.record.geometry import input_space_maps, layer_windows
from deepeyes_keras.record.patches import clipped_sizes, extract_input_patches, extract_windows
from deepeyes_keras.record.reservoir import Reservoir
from deepeyes_keras.record.statistics import LayerStatistics


def labels_from_targets(y, n_labels: int) -> tf.Tensor:
    """Integer class labels from sparse or one-hot targets (-1 where there are none)."""
    if y is None:
        return None
    y = tf.convert_to_tensor(y)
    if y.shape.rank is not None and y.shape.rank >= 2 and y.shape[-1] not in (None, 1):
        labels = tf.argmax(y, axis=-1, output_type=tf.int32)
        return tf.reshape(labels, [tf.shape(y)[0], -1])[:, 0]
    flat = tf.reshape(y, [tf.shape(y)[0], -1])[:, 0]
    if flat.dtype.is_floating:
        flat = tf.round(flat)
    labels = tf.cast(flat, tf.int32)
    return tf.where((labels >= 0) & (labels < n_labels), labels, -1)


class LayerTap:
    """Static facts about one analysed layer, computed once from the built model.

    Attributes:
        index: position among the analysed layers (its run-directory key is ``L<index>``).
        layer, name: the Keras layer and its name.
        in_shape, out_shape: the layer's input and output shapes, batch axis first.
        windows: its kernel window per spatial axis (``layer_windows``).
        grid: output positions per spatial axis; ``()`` for a dense layer.
        n_filters: channels (conv) or units (dense).
        descriptor_size: values in one neuronal receptive field.
        space_map: the input-space box per spatial axis (``input_space_maps``); None or ``()``
            when the patch is the whole input.
    """

    def __init__(self, index: int, layer, space_map):
        self.index = index
        self.layer = layer
        self.name = layer.name
        in_shape = tuple(layer.input.shape)
        out_shape = tuple(layer.output.shape)
        if any(s is None for s in in_shape[1:] + out_shape[1:]):
            raise ValueError(
                f"Layer {layer.name!r} has an unknown dimension (input {in_shape}, output "
                f"{out_shape}); DeepEyes needs static shapes. Give keras.Input a full shape."
            )
        self.in_shape = in_shape
        self.out_shape = out_shape
        self.windows = layer_windows(layer, in_shape)
        self.grid = tuple(int(s) for s in out_shape[1:-1])
        self.n_filters = int(out_shape[-1])
        self.descriptor_size = (
            int(np.prod(in_shape[1:]))
            if not self.grid
            else (int(np.prod([w.kernel for w in self.windows])) * int(in_shape[-1]))
        )
        self.space_map = space_map  # None: the whole input is the patch

    @property
    def kind(self) -> str:
        """``"dense"``, ``"conv2d"`` or ``"conv1d"``."""
        if isinstance(self.layer, keras.layers.Dense):
            return "dense"
        return "conv2d" if len(self.grid) == 2 else "conv1d"


class Recorder:
    """Capture in the train step, and a compiled measurement of the captured images.

    The train step only *captures*: it counts the step and copies a few random images of the
    batch (and their labels) into variables (:meth:`capture`, a handful of cheap ops). On sampled
    steps the callback calls :meth:`measure`, a separate ``tf.function`` that runs the cached tap
    model on the captured images with the weights of that step, samples receptive-field
    positions, updates the statistics and offers the instances to the reservoir. Keeping the
    measurement out of the train step keeps unsampled steps as fast as plain training.

    Args:
        model: the built model being trained.
        layers: the analysed layers (from :func:`deepeyes_keras.record.selection.resolve_layers`).
        images_per_step: images of the batch captured per step (chosen at random).
        positions_per_image: random positions sampled per image in conv layers (with replacement).
        reservoir_size: instances kept per layer for the maps.
        n_labels: number of classes.
        seed: seed of every random draw.
        strategy: the model's ``tf.distribute`` strategy: the capture variables get one copy per
            replica and the first replica's copy is measured; everything else lives outside the
            replicas.
        jit_compile: compile :meth:`measure` with XLA.
    """

    def __init__(
        self,
        model,
        layers,
        *,
        images_per_step,
        positions_per_image,
        reservoir_size,
        n_labels,
        seed,
        strategy=None,
        jit_compile=False,
    ):
        if len(model.inputs) != 1:
            raise ValueError(
                f"DeepEyesCallback supports models with one input; model {model.name!r} has "
                f"{len(model.inputs)}. Analyse a single-input sub-network instead."
            )
        self.images_per_step = int(images_per_step)
        self.positions_per_image = int(positions_per_image)
        self.n_labels = int(n_labels)
        self.seed = int(seed)
        self.input_shape = tuple(int(s) for s in model.inputs[0].shape[1:])
        self.input_dtype = model.inputs[0].dtype
        maps = input_space_maps(model, [layer.name for layer in layers])
        self.taps = [LayerTap(i, layer, maps.get(layer.name)) for i, layer in enumerate(layers)]
        outputs = []
        for layer in layers:
            outputs += [layer.input, layer.output]
        self.tap_model = keras.Model(model.inputs, outputs, name="deepeyes_taps")

        self._make_capture_variables(strategy)
        self.stats, self.reservoirs = [], []
        for tap in self.taps:
            self.stats.append(self._make_statistics(tap))
            self.reservoirs.append(self._make_reservoir(tap, reservoir_size))
        self.measure = tf.function(self._measure, jit_compile=jit_compile)

    def _make_capture_variables(self, strategy) -> None:
        k = self.images_per_step
        replicated = strategy is not None and _is_distributed(strategy)
        with strategy.scope() if replicated else _no_scope():
            self.step = _capture_variable("deepeyes/step", tf.zeros([], tf.int64), replicated)
            self.captured_x = _capture_variable(
                "deepeyes/captured_x",
                tf.zeros((k,) + self.input_shape, self.input_dtype),
                replicated,
            )
            self.captured_y = _capture_variable("deepeyes/captured_y", tf.fill([k], -1), replicated)

    def _make_statistics(self, tap: LayerTap) -> LayerStatistics:
        prefix = f"deepeyes/L{tap.index}/"
        return LayerStatistics(
            tap.n_filters, self.n_labels, lambda n, v: _state_variable(prefix + n, v)
        )

    def _make_reservoir(self, tap: LayerTap, reservoir_size: int) -> Reservoir:
        prefix = f"deepeyes/L{tap.index}/reservoir/"
        return Reservoir(
            reservoir_size,
            {
                "descriptor": (tap.descriptor_size,),
                "activation": (tap.n_filters,),
                "patch": self.patch_shape(tap),
            },
            lambda n, v: _state_variable(prefix + n, v),
            lambda var, idx, upd: var.scatter_nd_update(idx, upd),
            seed=self.seed * 7919 + tap.index,
        )

    def patch_shape(self, tap: LayerTap) -> tuple[int, ...]:
        """Shape of one input-space patch of ``tap`` (the whole input's when it has no box)."""
        if tap.space_map is None or not tap.space_map:
            return self.input_shape
        return clipped_sizes(tap.space_map, self.input_shape[:-1]) + (self.input_shape[-1],)

    def capture(self, data) -> None:
        """Graph ops appended to the train step: count the step, keep k random images."""
        step = self.step.read_value() + 1
        self.step.assign(step)
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.nest.flatten(x)[0]
        batch = tf.shape(x)[0]
        k = self.images_per_step
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        # Random images of the batch; a batch smaller than k repeats images (static shapes).
        order = tf.argsort(tf.random.stateless_uniform([batch], seed=seed))
        pick = tf.gather(order, tf.math.floormod(tf.range(k), batch))
        self.captured_x.assign(tf.cast(tf.gather(x, pick), self.input_dtype))
        labels = labels_from_targets(y, self.n_labels)
        self.captured_y.assign(tf.fill([k], -1) if labels is None else tf.gather(labels, pick))

    def _measure(self) -> None:
        """Measures the captured images with the current weights (a compiled function)."""
        step = tf.convert_to_tensor(self.step)
        xs = tf.convert_to_tensor(self.captured_x)
        ys = tf.convert_to_tensor(self.captured_y)
        k = self.images_per_step
        image_ids = (step - 1) * k + tf.range(k, dtype=tf.int64)
        tapped = self.tap_model(xs, training=False)
        for tap, stats, reservoir in zip(self.taps, self.stats, self.reservoirs, strict=True):
            layer_in = tf.cast(tapped[2 * tap.index], tf.float32)
            layer_out = tf.cast(tapped[2 * tap.index + 1], tf.float32)
            self._record_layer(tap, stats, reservoir, step, xs, ys, image_ids, layer_in, layer_out)

    def _record_layer(self, tap, stats, reservoir, step, xs, ys, image_ids, layer_in, layer_out):
        k = self.images_per_step
        if tap.grid:
            p = self.positions_per_image
            n_pos = math.prod(tap.grid)
            pos_seed = tf.stack([tf.constant(self.seed + 1 + tap.index, tf.int64), step])
            positions = tf.random.stateless_uniform(
                [k, p], seed=pos_seed, minval=0, maxval=n_pos, dtype=tf.int32
            )
            grid_out = tf.reshape(layer_out, [k, n_pos, tap.n_filters])
            acts = tf.reshape(tf.gather(grid_out, positions, batch_dims=1), [k * p, tap.n_filters])
            weight = 1.0
        else:
            p = 1
            positions = tf.zeros([k, 1], tf.int32)
            acts = tf.reshape(layer_out, [k, tap.n_filters])
            # One instance per image instead of positions_per_image: weight it so dense and
            # conv layers carry comparable histogram mass.
            weight = float(self.positions_per_image)
        inst_labels = tf.repeat(ys, p)
        stats.update(acts, inst_labels, step, weight=weight)

        descriptors = extract_windows(layer_in, tap.windows, positions)
        if tap.space_map:
            patches = extract_input_patches(
                tf.cast(xs, tf.float32), tap.space_map, tap.grid, positions
            )
        else:
            patches = tf.repeat(tf.cast(xs, tf.float32)[:, None], p, axis=1)
        reservoir.update(
            step,
            {
                "image": tf.repeat(image_ids, p),
                "position": tf.reshape(positions, [-1]),
                "label": inst_labels,
                "descriptor": tf.reshape(descriptors, [k * p, tap.descriptor_size]),
                "activation": acts,
                "patch": tf.reshape(patches, (k * p,) + self.patch_shape(tap)),
            },
        )

    def read(self, written_uid: dict[int, int]) -> dict:
        """NumPy copies of the state (outside the train step).

        Args:
            written_uid: per layer index, the largest reservoir uid already stored; only rows
                with a larger uid are copied (the reservoir's bulk columns are large).
        """

        def value(v):
            return tf.convert_to_tensor(v).numpy()

        layers = []
        for tap, stats, res in zip(self.taps, self.stats, self.reservoirs, strict=True):
            uid = value(res.columns["uid"])[: res.capacity]
            rows = np.flatnonzero(uid > written_uid.get(tap.index, -1))
            rows = rows[np.argsort(uid[rows], kind="stable")]
            new = {"uid": uid[rows]}
            for name, column in res.columns.items():
                if name != "uid":
                    new[name] = tf.gather(tf.convert_to_tensor(column), rows).numpy()
            layers.append(
                {
                    "stats": {n: value(v) for n, v in stats.variables().items()},
                    "reservoir_uids": uid[uid >= 0],
                    "new_samples": new,
                }
            )
        return {"step": int(value(self.step)), "layers": layers}


def _is_distributed(strategy) -> bool:
    """True for any strategy other than the default one (even with a single replica)."""
    return not isinstance(strategy, type(tf.distribute.get_strategy())) or (
        strategy.num_replicas_in_sync > 1
    )


class _no_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _state_variable(name, value):
    # Statistics and reservoirs live outside the replicas (see Recorder).
    return tf.Variable(value, trainable=False, name=name)


def _capture_variable(name, value, replicated):
    if not replicated:
        return tf.Variable(value, trainable=False, name=name)
    # One copy per replica, written inside the replicas; read outside them, the first
    # replica's copy is returned.
    return tf.Variable(
        value,
        trainable=False,
        name=name,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
    )
