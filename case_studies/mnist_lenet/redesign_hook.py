"""Hook file of the MNIST LeNet case study for ``deepeyes redesign RUN --verify``.

It trains the way ``run.py`` and ``deepeyes demo`` do: the paper's Caffe LeNet
(``deepeyes_keras.models.lenet``, SGD momentum 0.9 on the "inv" schedule), MNIST scaled by 1/256
with a channel axis, 2,000 iterations at batch 64 from a shuffled, repeated stream, evaluated on
the 10,000 test images::

    deepeyes demo --mnist ../shared/data/mnist.npz --run-name lenet-demo
    deepeyes redesign deepeyes_runs/lenet-demo --verify \\
        --hook case_studies/mnist_lenet/redesign_hook.py

MNIST is read from ``$DEEPEYES_MNIST``, else from ``../shared/data/mnist.npz`` beside the
repository when it exists, else downloaded by ``keras.datasets.mnist.load_data()``.
``$DEEPEYES_REDESIGN_STEPS`` changes the number of iterations (a quick check: 40).

The stream's shuffle takes no seed of its own: ``deepeyes redesign`` calls
``keras.utils.set_random_seed(seed)`` right before ``build_data()`` for each network, so the
original network and the proposal see the same batches in the same order for a given seed.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
BATCH = 64
STEPS = int(os.environ.get("DEEPEYES_REDESIGN_STEPS", "2000"))
EPOCHS = 4 if STEPS % 4 == 0 else 1  # a progress line every 500 iterations at the default
SEEDS = (0, 1, 2)


def mnist_path() -> str | None:
    """``$DEEPEYES_MNIST``, else the shared copy when it exists, else None (download)."""
    if os.environ.get("DEEPEYES_MNIST"):
        return os.environ["DEEPEYES_MNIST"]
    return str(SHARED_MNIST) if SHARED_MNIST.is_file() else None


def build_data():
    """A shuffled, repeated stream of MNIST batches, and the test arrays (scaled by 1/256)."""
    import tensorflow as tf

    from deepeyes_keras.data import load_mnist

    (x, y), (x_test, y_test) = load_mnist(mnist_path())
    x = x[..., None].astype("float32") / 256.0  # Caffe's scale
    x_test = x_test[..., None].astype("float32") / 256.0
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).repeat().batch(BATCH)
    return train.prefetch(2), (x_test, y_test)


def build_model(seed):
    """The paper's LeNet with the paper's solver, its initialisers seeded with ``seed``."""
    from deepeyes_keras.models import compile_lenet, lenet

    return compile_lenet(lenet(seed=seed))


def fit_kwargs():
    """``STEPS`` iterations in ``EPOCHS`` epochs of equal length (the stream never runs out)."""
    return {"epochs": EPOCHS, "steps_per_epoch": STEPS // EPOCHS}
