"""deepeyes-keras: DeepEyes progressive visual analytics for Keras 3 networks while they train.

Example:
    >>> from deepeyes_keras import DeepEyesCallback, load_run      # doctest: +SKIP
    >>> model.fit(x, y, callbacks=[DeepEyesCallback()])            # doctest: +SKIP
"""

__version__ = "0.1.0"

from deepeyes_keras.run.reader import load_run  # noqa: E402  (no TensorFlow needed to read runs)


def __getattr__(name):
    # The callback imports TensorFlow; load it only when asked for, so reading runs and building
    # the site stay TensorFlow-free.
    if name == "DeepEyesCallback":
        from deepeyes_keras.record.callback import DeepEyesCallback

        return DeepEyesCallback
    raise AttributeError(f"module 'deepeyes_keras' has no attribute {name!r}")


__all__ = ["DeepEyesCallback", "load_run", "__version__"]
