"""Reference networks: the paper's Caffe LeNet, rebuilt in Keras.

The recipe is described in viewer_site/case-studies/mnist-lenet.md.
"""

from __future__ import annotations

import keras

# Caffe's weight decay 5e-4 is 0.5 * 5e-4 * ||w||^2 per parameter; Keras's L2(l) adds l * ||w||^2.
LENET_L2 = 0.00025


def lenet(
    *,
    conv1: int = 20,
    conv2: int = 50,
    fc1: int = 500,
    n_classes: int = 10,
    input_shape=(28, 28, 1),
    seed: int | None = None,
) -> keras.Model:
    """Caffe's LeNet as the DeepEyes paper used it: no activation after the convolutions.

    Args:
        conv1, conv2: filters of the two 5x5 convolutions.
        fc1: units of the hidden dense layer (ReLU).
        n_classes: units of the output layer (softmax in the loss, so logits here).
        input_shape: image shape (inputs are expected scaled by 1/256).
        seed: seed of the Glorot-uniform initialisers.

    Example:
        >>> model = lenet()        # doctest: +SKIP
        >>> model.count_params()   # doctest: +SKIP
        431080
    """
    reg = keras.regularizers.L2(LENET_L2)

    def init(offset):
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + offset)

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(
                conv1,
                5,
                kernel_initializer=init(0),
                kernel_regularizer=reg,
                bias_regularizer=reg,
                name="conv1",
            ),
            keras.layers.MaxPooling2D(2, 2, name="pool1"),
            keras.layers.Conv2D(
                conv2,
                5,
                kernel_initializer=init(1),
                kernel_regularizer=reg,
                bias_regularizer=reg,
                name="conv2",
            ),
            keras.layers.MaxPooling2D(2, 2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(
                fc1,
                activation="relu",
                kernel_initializer=init(2),
                kernel_regularizer=reg,
                bias_regularizer=reg,
                name="fc1",
            ),
            keras.layers.Dense(
                n_classes,
                kernel_initializer=init(3),
                kernel_regularizer=reg,
                bias_regularizer=reg,
                name="fc2",
            ),
        ],
        name="lenet",
    )


@keras.saving.register_keras_serializable(package="deepeyes_keras")
class CaffeInvSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Caffe's "inv" policy: lr = base * (1 + gamma * iter) ** -power."""

    def __init__(self, base=0.01, gamma=1e-4, power=0.75):
        self.base, self.gamma, self.power = base, gamma, power

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        return self.base * keras.ops.power(1.0 + self.gamma * step, -self.power)

    def get_config(self):
        return {"base": self.base, "gamma": self.gamma, "power": self.power}


def compile_lenet(model: keras.Model) -> keras.Model:
    """Compiles with the paper's solver: SGD momentum 0.9 on the inv schedule, softmax loss."""
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=CaffeInvSchedule(), momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
