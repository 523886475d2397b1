"""Choosing the layers that DeepEyes analyses, checked before training starts.

:func:`check_graph_model` rejects models without a symbolic graph (subclassed models), whose inner
layers cannot be tapped. :func:`resolve_layers` turns the user's ``layers=[...]`` into the layers
to record: by default every Conv1D, Conv2D, DepthwiseConv1D/2D, SeparableConv1D/2D and Dense
layer; it lists every unknown name at once, with close matches, and names the requested layers it
cannot analyse.

Example:
    >>> layers, skipped = resolve_layers(model, ["conv1", "fc1"])   # doctest: +SKIP
    >>> [layer.name for layer in layers], skipped                    # doctest: +SKIP
    (['conv1', 'fc1'], [])
"""

from __future__ import annotations

import keras

from deepeyes_keras.names import did_you_mean

# A depthwise convolution's filters are its output channels (each sees one input channel through
# its kernel); a separable one is analysed as the layer it is (its output channels), both with the
# window of their input as the neuronal receptive field.
ANALYSABLE_TYPES = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Dense,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)
# Layers a user may expect us to analyse but that we cannot (yet): named in a warning when found.
_FILTER_LIKE_TYPES = (
    keras.layers.RNN,
    keras.layers.LSTM,
    keras.layers.GRU,
    keras.layers.SimpleRNN,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.Bidirectional,
)


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


def resolve_layers(model, names=None) -> tuple[list, list[str]]:
    """Picks the analysed layers.

    Args:
        model: a Sequential or Functional model (it need not be built).
        names: layer names, or None for every analysable layer (``ANALYSABLE_TYPES``).

    Returns:
        (layers to analyse in model order, names of requested layers that cannot be analysed).

    Raises:
        ValueError: listing every unknown name with close matches.
    """
    check_graph_model(model)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    by_name = {layer.name: layer for layer in layers}
    if names is None:
        chosen = [layer for layer in layers if isinstance(layer, ANALYSABLE_TYPES)]
        skipped = [layer.name for layer in layers if isinstance(layer, _FILTER_LIKE_TYPES)]
        if not chosen:
            raise ValueError(
                "DeepEyesCallback found no Conv1D, Conv2D or Dense layer to analyse in model "
                f"{model.name!r} (layers: {[layer.name for layer in layers]}). Pass layers=[...] "
                "with the names of the layers to analyse."
            )
        return chosen, skipped
    unknown = [n for n in names if n not in by_name]
    if unknown:
        hints = [
            f"{n!r} ({hint})" if (hint := did_you_mean(n, by_name)) else repr(n) for n in unknown
        ]
        raise ValueError(
            f"Invalid value for argument layers: {len(unknown)} name(s) are not layers of model "
            f"{model.name!r}: {'; '.join(hints)}. Available layers: {list(by_name)}."
        )
    wanted = set(names)
    chosen = [layer for layer in layers if layer.name in wanted]
    skipped = [layer.name for layer in chosen if not isinstance(layer, ANALYSABLE_TYPES)]
    chosen = [layer for layer in chosen if isinstance(layer, ANALYSABLE_TYPES)]
    if not chosen:
        raise ValueError(
            f"None of the requested layers {list(names)} can be analysed: DeepEyes analyses "
            "Conv1D, Conv2D, DepthwiseConv1D/2D, SeparableConv1D/2D and Dense layers."
        )
    return chosen, skipped
