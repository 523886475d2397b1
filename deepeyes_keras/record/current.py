"""Activations of the current network: every reservoir instance measured with a snapshot's weights.

A reservoir instance keeps the activation from the step it was sampled at, so the overlays of one
input map would mix the responses of many past networks. For a layer whose output at an instance
is a function of the stored descriptor and the layer's weights alone, :func:`current_activations`
computes it again at snapshot time, as TF ops on the reservoir's descriptors:
``activation(descriptor @ kernel.reshape(-1, F) + bias)``. That holds for

* ``Conv1D``/``Conv2D`` (``groups=1``, channels last): the descriptor is the input window in
  ``(k_h, k_w, C)`` order, zeros in padding, exactly what the kernel reads;
* ``Dense`` on a vector: the descriptor is the whole input.

The activation is applied to the whole row of F pre-activations of an instance, so any Keras
activation (``softmax`` included) gives what the layer gives. :func:`why_not_current` names why
another layer keeps its sampled activations: descriptors hashed to ``DESCRIPTOR_DIM`` values
(the window is lost), recurrent layers (their state is not in the weights), other layer types
(depthwise, separable, transposed, grouped convolutions, ``Dense`` on a sequence). The
snapshot stores the result as codes 0..15 of the activation clamped at 0, per filter scaled to
its largest value (:func:`encode` and :func:`decode`): the 16 levels the input map's overlays
draw (``deepeyes_keras.charts.layer_data.ACTIVATION_CODES``), so more would be stored and never
shown. The layer's snapshot record says so (``current_levels``: 15; early schema-3 runs
wrote 63, schema 2 0..255).

Example:
    >>> why_not_current(tap)                                   # doctest: +SKIP
    None
    >>> current_activations(tap, descriptors).shape            # doctest: +SKIP
    TensorShape([2000, 20])
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from deepeyes_keras.record.taps import DESCRIPTOR_DIM, LayerTap

# codes 0..15: activation / max over the reservoir, per filter; the views draw 16 levels
# (deepeyes_keras.charts.layer_data.CODE_TOP, a stage this one does not import)
CODE_LEVELS = 15

__all__ = ["CODE_LEVELS", "current_activations", "decode", "encode", "why_not_current"]


def why_not_current(tap: LayerTap) -> str | None:
    """None when ``tap``'s activations can be recomputed from its descriptors, else why not."""
    layer = tap.layer
    if tap.recurrent is not None:
        return "recurrent layer: its output depends on its state, not only on the weights"
    if tap.projected:
        return f"descriptors are hashed to {DESCRIPTOR_DIM} values, so the input window is not kept"
    if isinstance(layer, keras.layers.Dense):
        if tap.windows or len(tap.in_shape) != 2:
            return "Dense layer on a sequence: its descriptor is not one input vector"
        return None
    if isinstance(layer, keras.layers.Conv1D | keras.layers.Conv2D):
        if int(getattr(layer, "groups", 1)) != 1:
            return "grouped convolution"
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return "channels-first convolution"
        return None
    return f"{type(layer).__name__} layer: not a Conv1D, Conv2D or Dense layer"


def current_activations(tap: LayerTap, descriptors) -> tf.Tensor:
    """``(n, D)`` descriptors to the ``(n, F)`` layer outputs with the layer's current weights.

    Raises:
        ValueError: for a layer :func:`why_not_current` refuses, or descriptors of the wrong width.
    """
    reason = why_not_current(tap)
    if reason is not None:
        raise ValueError(f"Layer {tap.name!r}: activations cannot be recomputed ({reason}).")
    x = tf.cast(tf.convert_to_tensor(descriptors), tf.float32)
    if x.shape.rank != 2 or int(x.shape[1]) != tap.raw_descriptor_size:
        raise ValueError(
            f"Invalid descriptors for layer {tap.name!r}. Received: shape={tuple(x.shape)}. "
            f"Expected (n, {tap.raw_descriptor_size})."
        )
    layer = tap.layer
    kernel = tf.reshape(
        tf.cast(tf.convert_to_tensor(layer.kernel), tf.float32), [-1, tap.n_filters]
    )
    z = tf.matmul(x, kernel)
    if getattr(layer, "use_bias", False) and layer.bias is not None:
        z = z + tf.cast(tf.convert_to_tensor(layer.bias), tf.float32)
    activation = getattr(layer, "activation", None)
    out = tf.convert_to_tensor(activation(z) if activation is not None else z)
    out = tf.cast(out, tf.float32)
    return tf.where(tf.math.is_finite(out), out, tf.zeros_like(out))


def encode(activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(n, F)`` activations to uint8 codes of ``max(a, 0) / scale`` and the ``(F,)`` scales.

    The scale of a filter is its largest activation over the rows (1 where none is above 0), so
    a code is off by at most ``scale / (2 * CODE_LEVELS)``.
    """
    a = np.nan_to_num(np.asarray(activations, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    a = np.maximum(a, 0.0)
    top = a.max(axis=0) if len(a) else np.zeros(a.shape[1], np.float32)
    scale = np.where(top > 0, top, 1.0).astype(np.float32)
    codes = np.rint(a / scale * CODE_LEVELS).clip(0, CODE_LEVELS).astype(np.uint8)
    return codes, scale


def decode(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """:func:`encode`'s codes back to float32 activations (clamped at 0)."""
    return np.asarray(codes, np.float32) * (np.asarray(scale, np.float32) / CODE_LEVELS)
