"""Choosing the layers that DeepEyes analyses, checked before training starts.

:func:`check_graph_model` rejects models without a symbolic graph (subclassed models), whose inner
layers cannot be tapped. :func:`resolve_layers` turns the user's ``layers=[...]`` into the layers
to record, as ``(name, layer)`` pairs: by default every Conv1D, Conv2D, DepthwiseConv1D/2D,
SeparableConv1D/2D, Dense and recurrent layer (LSTM, GRU, SimpleRNN, RNN, Bidirectional), also
inside nested models (a backbone used as a layer), where a layer's name is its path
``outer/inner``. It lists every unknown name at once, with close matches, and names the requested
layers it cannot analyse with the reason. On big networks the recorder keeps a default choice
within a memory budget (``deepeyes_keras/record/budget.py``).

Example:
    >>> layers, _ = resolve_layers(model, ["conv1", "backbone/block_1_expand"])  # doctest: +SKIP
    >>> [name for name, _ in layers], _                                   # doctest: +SKIP
    (['conv1', 'backbone/block_1_expand'], [])
"""

from __future__ import annotations

import keras

from deepeyes_keras.names import did_you_mean
from deepeyes_keras.record.geometry import layer_paths
from deepeyes_keras.record.taps import RECURRENT_TYPES

# A depthwise convolution's filters are its output channels (each sees one input channel through
# its kernel); a separable one is analysed as the layer it is (its output channels), both with the
# window of their input as the neuronal receptive field. Recurrent layers: see record/taps.py.
ANALYSABLE_TYPES = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Dense,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    *RECURRENT_TYPES,
)
# Layers a user may expect us to analyse but that we cannot (yet), with the reason: named in a
# warning when found, never dropped silently.
UNSUPPORTED_REASONS = {
    keras.layers.Conv3D: "3-D convolutions: volumes have no thumbnails or 2-D maps yet",
    keras.layers.Conv1DTranspose: "transposed convolutions: an output position is written by "
    "several input windows, so it has no single neuronal receptive field",
    keras.layers.Conv2DTranspose: "transposed convolutions: an output position is written by "
    "several input windows, so it has no single neuronal receptive field",
    keras.layers.Conv3DTranspose: "3-D transposed convolutions (see Conv3D and Conv2DTranspose)",
    keras.layers.ConvLSTM1D: "convolutional recurrent layers: no definition of an instance yet",
    keras.layers.ConvLSTM2D: "convolutional recurrent layers: no definition of an instance yet",
}
SUPPORTED_TEXT = (
    "Conv1D/2D, DepthwiseConv1D/2D, SeparableConv1D/2D, Dense, and LSTM, GRU, SimpleRNN, RNN, "
    "Bidirectional"
)


def unsupported_reason(layer) -> str | None:
    """Why DeepEyes cannot analyse ``layer`` although it has filters; None for other layers."""
    for kind, reason in UNSUPPORTED_REASONS.items():
        if isinstance(layer, kind):
            return f"{type(layer).__name__}: {reason}"
    return None


def check_graph_model(model) -> None:
    """Raises TypeError unless ``model`` has a symbolic graph (Sequential or Functional)."""
    if isinstance(model, keras.Sequential):
        return
    if getattr(model, "_is_graph_network", False) or type(model).__name__ == "Functional":
        return
    try:  # Keras 3 keeps the class private; a subclass of Functional is fine too.
        from keras.src.models.functional import Functional

        if isinstance(model, Functional):
            return
    except ImportError:  # pragma: no cover - layout of a future Keras
        pass
    raise TypeError(
        "DeepEyesCallback needs a model with a symbolic graph (keras.Sequential or a Functional "
        "keras.Model) so it can tap the inputs and outputs of inner layers. Received a subclassed "
        f"model of type {type(model).__name__}. Rebuild it as a Functional model "
        "(inputs = keras.Input(shape); x = layer(inputs); ...; keras.Model(inputs, outputs)) or "
        "as a keras.Sequential, then pass that to fit()."
    )


def resolve_layers(model, names=None) -> tuple[list[tuple[str, object]], list[str]]:
    """Picks the analysed layers.

    Args:
        model: a Sequential or Functional model (it need not be built).
        names: layer names (``outer/inner`` for a layer inside a nested model), or None for every
            analysable layer (``ANALYSABLE_TYPES``) at any depth.

    Returns:
        (``(name, layer)`` pairs to analyse, in model order; messages naming the layers that
        cannot be analysed, each with the reason).

    Raises:
        ValueError: listing every unknown name with close matches.
    """
    check_graph_model(model)
    pairs = [(name, layer) for name, layer in layer_paths(model)]
    by_name = dict(pairs)
    if names is None:
        chosen = [(n, layer) for n, layer in pairs if isinstance(layer, ANALYSABLE_TYPES)]
        skipped = [f"{n} ({reason})" for n, layer in pairs if (reason := unsupported_reason(layer))]
        if not chosen:
            raise ValueError(
                f"DeepEyesCallback found no layer to analyse in model {model.name!r} (it analyses "
                f"{SUPPORTED_TEXT}; layers: {list(by_name)}). Pass layers=[...] with the names of "
                "the layers to analyse."
            )
        return chosen, skipped
    unknown = [n for n in names if n not in by_name]
    if unknown:
        hints = [
            f"{n!r} ({hint})" if (hint := did_you_mean(n, by_name)) else repr(n) for n in unknown
        ]
        raise ValueError(
            f"Invalid value for argument layers: {len(unknown)} name(s) are not layers of model "
            f"{model.name!r}: {'; '.join(hints)}. Layers inside a nested model are named "
            f"'<nested model>/<layer>'. Available layers: {list(by_name)}."
        )
    wanted = set(names)
    requested = [(n, layer) for n, layer in pairs if n in wanted]
    skipped = [
        f"{n} ({_why_not(layer)})"
        for n, layer in requested
        if not isinstance(layer, ANALYSABLE_TYPES)
    ]
    chosen = [(n, layer) for n, layer in requested if isinstance(layer, ANALYSABLE_TYPES)]
    if not chosen:
        raise ValueError(
            f"None of the requested layers {list(names)} can be analysed: {'; '.join(skipped)}. "
            f"DeepEyes analyses {SUPPORTED_TEXT} layers."
        )
    return chosen, skipped


def _why_not(layer) -> str:
    if isinstance(layer, keras.Model):
        return f"a nested model: name its layers as '{layer.name}/<layer>'"
    return unsupported_reason(layer) or f"{type(layer).__name__} has no filters to analyse"
