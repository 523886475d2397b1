"""Recording the analysed layers while the model trains.

The analysed layers are chosen by ``deepeyes_keras/record/selection.py`` and described by
:class:`~deepeyes_keras.record.taps.LayerTap` (``deepeyes_keras/record/taps.py``, which also
builds the tap model). :class:`Recorder` owns one cached sub-model that taps the input and output
of every analysed layer (also inside nested models), and the statistics and reservoir of each
layer. :meth:`Recorder.capture` is the handful of graph ops added to the model's ``train_step``
(count the step, keep a few random samples of the batch, every model input of them);
:meth:`Recorder.measure`, a separate compiled function run on sampled steps, runs the tap model on
them, samples receptive-field positions, updates the statistics and offers the instances to the
reservoir. :meth:`Recorder.read` copies the state to NumPy for a snapshot
(``deepeyes_keras/record/snapshot.py``).

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

from deepeyes_keras.record.budget import MEMORY_BUDGET_MB, choose_within_budget, recorder_bytes
from deepeyes_keras.record.compiled import UnoptimizedFirstCall
from deepeyes_keras.record.current import current_activations, why_not_current
from deepeyes_keras.record.geometry import input_space_maps_by_input
from deepeyes_keras.record.patches import extract_input_patches, extract_windows
from deepeyes_keras.record.reservoir import Reservoir
from deepeyes_keras.record.statistics import LayerStatistics
from deepeyes_keras.record.taps import LayerTap, shrink_patches, tap_model, tap_tensors

FLOAT16_MAX = float(np.finfo(np.float16).max)
"""Largest float16: bulk columns (descriptors, patches) are kept and stored as float16."""


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


class Recorder:
    """Capture in the train step, and a compiled measurement of the captured samples.

    The train step only *captures*: it counts the step and copies a few random samples of the
    batch (every model input, and their labels) into variables (:meth:`capture`, a handful of
    cheap ops). On sampled steps the callback calls :meth:`measure`, a separate ``tf.function``
    that runs the cached tap model on the captured samples with the weights of that step, samples
    receptive-field positions, updates the statistics and offers the instances to the reservoir.
    Keeping the measurement out of the train step keeps unsampled steps as fast as plain training.

    Args:
        model: the built model being trained (one or several inputs).
        layers: the analysed layers as ``(name, layer)`` pairs (from
            :func:`deepeyes_keras.record.selection.resolve_layers`); ``outer/inner`` names reach
            layers inside nested models.
        images_per_step: samples of the batch captured per step (chosen at random).
        positions_per_image: random positions sampled per image in conv layers (with replacement).
        reservoir_size: instances kept per layer for the maps.
        n_labels: number of classes.
        seed: seed of every random draw.
        strategy: the model's ``tf.distribute`` strategy: the capture variables get one copy per
            replica and the first replica's copy is measured; everything else lives outside the
            replicas.
        jit_compile: compile :meth:`measure` with XLA.
        choose: True when the layers are the default choice: keep those that fit
            ``memory_budget_mb`` (``deepeyes_keras/record/budget.py``); the rest are listed in
            ``left_out``.
        memory_budget_mb: the bound of the default choice (None: none).

    Attributes:
        taps: the analysed layers (``LayerTap``), indexed in recording order.
        left_out: names of default layers left out by the budget.
        estimated_bytes: the recorder's variables, in bytes (``budget.recorder_bytes``).
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
        choose=False,
        memory_budget_mb=MEMORY_BUDGET_MB,
    ):
        self.images_per_step = int(images_per_step)
        self.positions_per_image = int(positions_per_image)
        self.n_labels = int(n_labels)
        self.seed = int(seed)
        self.input_names = [str(t.name) for t in model.inputs]
        self.input_shapes = [_static_shape(model, t) for t in model.inputs]
        self.input_dtypes = [t.dtype for t in model.inputs]
        self.input_shape = self.input_shapes[0]
        layers = [
            (layer.name, layer) if not isinstance(layer, tuple) else layer for layer in layers
        ]
        names = [name for name, _ in layers]
        sources = input_space_maps_by_input(model, names)
        pairs = tap_tensors(model, names)  # shapes where tapped: known even in a shapeless backbone

        def make_tap(i, name, layer):
            shapes = tuple(t.shape for t in pairs[name])
            return LayerTap(i, name, layer, sources.get(name) or {}, self.input_shapes, shapes)

        taps = [make_tap(i, name, layer) for i, (name, layer) in enumerate(layers)]
        fixed = self.images_per_step * sum(4 * math.prod(s) for s in self.input_shapes)
        left_out = []
        if choose:
            taps, left_out = choose_within_budget(
                taps,
                reservoir_size=reservoir_size,
                n_labels=self.n_labels,
                memory_budget_mb=memory_budget_mb,
                fixed_bytes=fixed,
            )
        self.left_out = [tap.name for tap in left_out]
        self.taps = [make_tap(i, t.name, t.layer) for i, t in enumerate(taps)]
        self.estimated_bytes = recorder_bytes(
            self.taps, reservoir_size=reservoir_size, n_labels=self.n_labels, fixed_bytes=fixed
        )
        self.tap_model = tap_model(model, self.taps, pairs)

        self._make_capture_variables(strategy)
        self.stats, self.reservoirs = [], []
        for tap in self.taps:
            self.stats.append(self._make_statistics(tap))
            self.reservoirs.append(self._make_reservoir(tap, reservoir_size))
        # autograph=False: the measurement has no tensor-dependent Python control flow, and
        # converting its source was most of the one-off cost of a fit (issue 15); its first call
        # skips Grappler (record/compiled.py).
        self.measure = UnoptimizedFirstCall(
            tf.function(self._measure, jit_compile=jit_compile, autograph=False)
        )

    def _make_capture_variables(self, strategy) -> None:
        k = self.images_per_step
        replicated = strategy is not None and _is_distributed(strategy)
        with strategy.scope() if replicated else _no_scope():
            self.step = _capture_variable("deepeyes/step", tf.zeros([], tf.int64), replicated)
            self.captured_x = [
                _capture_variable(
                    f"deepeyes/captured_x{i}", tf.zeros((k,) + shape, dtype), replicated
                )
                for i, (shape, dtype) in enumerate(
                    zip(self.input_shapes, self.input_dtypes, strict=True)
                )
            ]
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
            # The snapshot stores both as float16: keeping them so here halves their memory.
            dtypes={"descriptor": tf.float16, "patch": tf.float16},
        )

    def patch_shape(self, tap: LayerTap) -> tuple[int, ...]:
        """Shape of one stored input-space patch of ``tap`` (``(0,)`` when it has none)."""
        return tap.patch_shape() or (0,)

    def _model_inputs(self, x) -> list:
        """The batch's tensor for each model input, in the order of ``model.inputs``."""
        if isinstance(x, dict):
            missing = [n for n in self.input_names if n not in x]
            if missing:
                raise ValueError(
                    f"DeepEyes: the batch's inputs {sorted(x)} lack the model inputs {missing}; "
                    "name the dict keys after the model's keras.Input(name=...)."
                )
            return [x[n] for n in self.input_names]
        flat = tf.nest.flatten(x)
        if len(flat) != len(self.input_names):
            raise ValueError(
                f"DeepEyes: the batch holds {len(flat)} input tensors but the model has "
                f"{len(self.input_names)} inputs {self.input_names}."
            )
        return flat

    def capture(self, data) -> None:
        """Graph ops appended to the train step: count the step, keep k random samples."""
        step = self.step.read_value() + 1
        self.step.assign(step)
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        xs = [tf.convert_to_tensor(v) for v in self._model_inputs(x)]
        batch = tf.shape(xs[0])[0]
        k = self.images_per_step
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        # Random samples of the batch; a batch smaller than k repeats samples (static shapes).
        order = tf.argsort(tf.random.stateless_uniform([batch], seed=seed))
        pick = tf.gather(order, tf.math.floormod(tf.range(k), batch))
        for variable, value in zip(self.captured_x, xs, strict=True):
            variable.assign(tf.cast(tf.gather(value, pick), variable.dtype))
        labels = labels_from_targets(y, self.n_labels)
        self.captured_y.assign(tf.fill([k], -1) if labels is None else tf.gather(labels, pick))

    def _measure(self) -> None:
        """Measures the captured samples with the current weights (a compiled function)."""
        step = tf.convert_to_tensor(self.step)
        xs = [tf.convert_to_tensor(v) for v in self.captured_x]
        ys = tf.convert_to_tensor(self.captured_y)
        k = self.images_per_step
        image_ids = (step - 1) * k + tf.range(k, dtype=tf.int64)
        tapped = self.tap_model(xs[0] if len(xs) == 1 else xs, training=False)
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
        inst_labels = _repeat_rows(ys, p)
        stats.update(acts, inst_labels, step, weight=weight)

        windows = extract_windows(tap.neuronal_input(layer_in, layer_out), tap.windows, positions)
        descriptors = tap.project(tf.reshape(windows, [k * p, tap.raw_descriptor_size]))
        reservoir.update(
            step,
            {
                "image": _repeat_rows(image_ids, p),
                "position": tf.reshape(positions, [-1]),
                "label": inst_labels,
                "descriptor": _half(descriptors),
                # not clamped; non-finite values are stored as 0 (counted in the statistics)
                "activation": tf.where(tf.math.is_finite(acts), acts, 0.0),
                "patch": _half(self._patches(tap, xs, positions, k * p)),
            },
        )

    def _patches(self, tap: LayerTap, xs, positions, m: int) -> tf.Tensor:
        """The stored input-space patches of the sampled positions, ``(m, *patch_shape)``."""
        shape = self.patch_shape(tap)
        if tap.patch_input is None:
            return tf.zeros((m,) + shape)
        images = tf.cast(xs[tap.patch_input], tf.float32)
        p = m // self.images_per_step
        if tap.space_map:
            patches = extract_input_patches(images, tap.space_map, tap.grid, positions)
        else:  # the whole input
            patches = _repeat_rows(images, p, stacked=True)
        patches = tf.reshape(patches, [m, *patches.shape[2:]])
        if len(shape) >= 2:  # an image or sequence: at most what the thumbnails draw
            patches = shrink_patches(patches, shape[:-1])
        return tf.reshape(patches, (m,) + shape)

    def read(self, written_uid: dict[int, int]) -> dict:
        """NumPy copies of the state (outside the train step).

        Args:
            written_uid: per layer index, the largest reservoir uid already stored; only rows
                with a larger uid are copied (the reservoir's bulk columns are large).

        Each layer's ``current_activation`` is the activation of every held instance (rows as
        ``reservoir_uids``) with the weights of now (``deepeyes_keras/record/current.py``), or
        None with ``current_reason`` saying why it cannot be recomputed.
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
            held = np.flatnonzero(uid >= 0)
            reason = why_not_current(tap)
            current = None
            if reason is None and len(held):  # the held instances with this snapshot's weights
                descriptors = tf.gather(tf.convert_to_tensor(res.columns["descriptor"]), held)
                current = current_activations(tap, descriptors).numpy()
            layers.append(
                {
                    "stats": {n: value(v) for n, v in stats.variables().items()},
                    "reservoir_uids": uid[held],
                    "new_samples": new,
                    "current_activation": current,
                    "current_reason": reason,
                }
            )
        return {"step": int(value(self.step)), "layers": layers}


def _is_distributed(strategy) -> bool:
    """True for any strategy other than the default one (even with a single replica)."""
    return not isinstance(strategy, type(tf.distribute.get_strategy())) or (
        strategy.num_replicas_in_sync > 1
    )


def _repeat_rows(x: tf.Tensor, p: int, *, stacked: bool = False) -> tf.Tensor:
    """Each row of ``x`` (static shape) p times in a row, as ``tf.repeat(x, p, axis=0)``.

    With ``stacked`` the copies get their own axis: ``(n, p, ...)`` instead of ``(n * p, ...)``.
    A broadcast and a reshape: tf.repeat builds about ten times the graph ops, and the first
    call of the measurement pays for each op it traces (issue 15).
    """
    shape = [int(d) for d in x.shape]
    copies = tf.broadcast_to(tf.expand_dims(x, 1), [shape[0], p, *shape[1:]])
    return copies if stacked else tf.reshape(copies, [shape[0] * p, *shape[1:]])


def _half(x: tf.Tensor) -> tf.Tensor:
    """float32 to float16 without overflow: non-finite values become 0, the rest is clipped."""
    x = tf.where(tf.math.is_finite(x), x, 0.0)
    return tf.cast(tf.clip_by_value(x, -FLOAT16_MAX, FLOAT16_MAX), tf.float16)


def _static_shape(model, tensor) -> tuple[int, ...]:
    shape = tuple(tensor.shape[1:])
    if any(s is None for s in shape):
        raise ValueError(
            f"Model {model.name!r} has an input {tensor.name!r} of shape {(None, *shape)} with an "
            "unknown dimension; DeepEyes keeps a few samples per step in fixed-size variables. "
            "Give keras.Input a full shape (e.g. the sequence length of a text input)."
        )
    return tuple(int(s) for s in shape)


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
