"""The main job: train a network with DeepEyes watching, on data that needs no download."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from deepeyes_keras.run.layout import is_run_dir


def train_demo(
    *,
    mnist: str | None = None,
    steps: int = 2000,
    log_dir: str = "deepeyes_runs",
    run_name: str | None = None,
    seed: int = 0,
    verbose: int = 1,
) -> Path:
    """Trains the paper's LeNet on MNIST (or a small CNN on scikit-learn's digits) with DeepEyes.

    Args:
        mnist: path of MNIST in Keras's npz layout; without it, scikit-learn's 8x8 digits are used
            (they ship with scikit-learn, so nothing is downloaded).
        steps: training iterations (batch 64).
        log_dir: where the run directory goes.
        run_name: name of the run directory (default: date, time and model name).
        seed: seed of the weights, the data order and DeepEyes' sampling.
        verbose: 0 silent, 1 progress bar and DeepEyes' messages.

    Returns:
        The run directory.
    """
    import keras

    from deepeyes_keras import DeepEyesCallback
    from deepeyes_keras.data import load_digits_images, load_mnist
    from deepeyes_keras.models import compile_lenet, lenet

    keras.utils.set_random_seed(seed)
    if mnist:
        (x, y), (x_test, y_test) = load_mnist(mnist)
        x = x[..., None].astype("float32") / 256.0  # Caffe's scale
        x_test = x_test[..., None].astype("float32") / 256.0
        model = compile_lenet(lenet(seed=seed))
    else:
        (x, y), (x_test, y_test) = load_digits_images()
        # 8x8 images are too small for LeNet's 5x5 stages: a small CNN with 3x3 kernels.
        model = _digits_cnn(seed)
    batch = 64
    # Exactly `steps` iterations (up to rounding to whole epochs of equal length).
    epochs = max(1, math.ceil(steps / math.ceil(len(x) / batch)))
    steps_per_epoch = math.ceil(steps / epochs)
    if run_name and is_run_dir(Path(log_dir) / run_name):
        shutil.rmtree(Path(log_dir) / run_name)  # the demo replaces its previous run
    cb = DeepEyesCallback(log_dir=log_dir, run_name=run_name, seed=seed, verbose=verbose)
    import tensorflow as tf

    # A shuffled, repeated stream: epochs of `steps_per_epoch` never run out of data.
    data = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed)
        .repeat()
        .batch(batch)
        .prefetch(2)
    )
    began = time.perf_counter()
    model.fit(
        data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        shuffle=False,
        verbose=verbose,
        callbacks=[cb],
    )
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    cb.wait_for_maps()
    if verbose:
        print(
            f"Trained {model.name} for {epochs * steps_per_epoch} steps in "
            f"{time.perf_counter() - began:.0f} s; test accuracy {accuracy:.4f}."
        )
        print(f"DeepEyes run: {cb.run_dir}")
    return cb.run_dir


def _digits_cnn(seed: int):
    import keras

    from deepeyes_keras.models import compile_lenet

    init = keras.initializers.GlorotUniform(seed=seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, kernel_initializer=init, name="conv1"),
            keras.layers.Conv2D(32, 3, kernel_initializer=init, name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", kernel_initializer=init, name="fc1"),
            keras.layers.Dense(10, kernel_initializer=init, name="fc2"),
        ],
        name="digits_cnn",
    )
    return compile_lenet(model)
