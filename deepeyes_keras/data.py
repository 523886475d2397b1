"""Data sets that need no download at test or run time.

MNIST comes from a Keras-layout ``.npz`` path (argument, or the ``DEEPEYES_MNIST`` environment
variable); only when neither is given does it fall back to ``keras.datasets.mnist.load_data()``,
which downloads. scikit-learn's 8x8 digits ship inside the package and never download.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MNIST_ENV = "DEEPEYES_MNIST"


def load_mnist(path: str | os.PathLike | None = None):
    """Loads MNIST as ``(x_train, y_train), (x_test, y_test)`` with uint8 images of 28x28.

    Args:
        path: a ``.npz`` in Keras's layout (x_train, y_train, x_test, y_test). Defaults to the
            ``DEEPEYES_MNIST`` environment variable, then to ``keras.datasets.mnist.load_data()``.
    """
    path = path or os.environ.get(MNIST_ENV)
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"MNIST file {str(path)!r} does not exist. Pass the path of an .npz with x_train, "
                f"y_train, x_test, y_test (or unset {MNIST_ENV} to download with Keras)."
            )
        with np.load(path) as data:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(data.files)
            if missing:
                raise ValueError(
                    f"MNIST file {str(path)!r} lacks arrays {sorted(missing)}; "
                    "expected the keras.datasets.mnist layout."
                )
            return (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])
    import keras

    return keras.datasets.mnist.load_data()


def load_digits_images():
    """scikit-learn's 8x8 digits (ships with the package) as float32 images in [0, 1].

    Returns:
        ``(x_train, y_train), (x_test, y_test)`` with x of shape (n, 8, 8, 1); a fixed 80/20 split.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(0.8 * len(x))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])
