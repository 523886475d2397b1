"""Acting on findings: the same network with new widths, or without a layer, fresh weights."""

from __future__ import annotations

import keras

from deepeyes_keras.names import did_you_mean
from deepeyes_keras.redesign.proposal import RESIZABLE

# The widths it can change (defined with the proposal, which needs no TensorFlow).
_WIDTH_KEYS = {name: "units" if name == "Dense" else "filters" for name in RESIZABLE}


def resize_model(
    model: keras.Model,
    widths: dict[str, int] | None = None,
    *,
    remove: list[str] | tuple[str, ...] = (),
    compile_like: bool = True,
    name: str | None = None,
) -> keras.Model:
    """Rebuilds ``model`` with the same topology, new widths and fresh weights.

    Works for Sequential and Functional models: every layer is re-created from its config
    (``keras.models.clone_model``), with ``filters``/``units`` replaced for the layers named in
    ``widths``; a layer named in ``remove`` is replaced by an identity, i.e. removed (only
    layers whose input and output widths may then differ without breaking the graph, such as a
    hidden Dense layer followed by another Dense layer). Weights are freshly initialised.

    Args:
        model: the trained (or not) model.
        widths: new width per layer name, e.g. ``{"conv1": 10, "fc1": 100}``.
        remove: names of layers to remove.
        compile_like: compile the new model with the original's compile settings (optimizer
            config, loss, metrics) when the original was compiled.
        name: name of the new model (default: the original name + "_resized").

    Returns:
        The new model.

    Example:
        >>> smaller = resize_model(lenet(), {"conv1": 10, "fc1": 100})   # doctest: +SKIP
        >>> smaller.count_params()                                        # doctest: +SKIP
        93920
    """
    widths = dict(widths or {})
    remove = list(remove)
    names = [layer.name for layer in model.layers]
    unknown = [n for n in list(widths) + remove if n not in names]
    if unknown:
        # One suggestion per name, as this message has always given.
        hints = [
            f"{n!r} ({hint})" if (hint := did_you_mean(n, names, n=1)) else repr(n) for n in unknown
        ]
        raise ValueError(
            f"resize_model: unknown layer name(s) {', '.join(hints)}. "
            f"Layers of {model.name!r}: {names}."
        )
    for layer_name, width in widths.items():
        layer = model.get_layer(layer_name)
        if type(layer).__name__ not in _WIDTH_KEYS:
            raise ValueError(
                f"resize_model: layer {layer_name!r} is a {type(layer).__name__}; "
                f"only {', '.join(RESIZABLE)} widths can be changed (a depthwise "
                "convolution has as many channels as its input times its depth multiplier)."
            )
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(
                f"resize_model: width of {layer_name!r} must be an integer >= 1. "
                f"Received: {width!r}."
            )
    for layer_name in remove:
        if layer_name in widths:
            raise ValueError(f"resize_model: layer {layer_name!r} is both resized and removed.")
        if model.layers and model.get_layer(layer_name) is model.layers[-1]:
            raise ValueError(
                f"resize_model: {layer_name!r} is the output layer; it cannot be removed."
            )

    def clone(layer):
        config = layer.get_config()
        if layer.name in remove:
            return keras.layers.Identity(name=f"removed_{layer.name}")
        if layer.name in widths:
            config[_WIDTH_KEYS[type(layer).__name__]] = widths[layer.name]
        return type(layer).from_config(config)

    new = keras.models.clone_model(model, clone_function=clone)
    new.name = name or f"{model.name}_resized"
    if compile_like and getattr(model, "compiled", False):
        config = model.get_compile_config()
        if config is not None:
            try:
                new.compile_from_config(config)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"resize_model could not recompile {model.name!r} from its compile config "
                    f"({err}). Register custom objects with keras.saving."
                    "register_keras_serializable, or pass compile_like=False and compile the new "
                    "model yourself."
                ) from err
    return new
